import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pack_sequence, pad_packed_sequence

from seqtag.modules.encoder import DocumentEncoder, RNNEncoder, document_layout


def test_equal_length_batch_runs_unpacked_with_the_packed_result():
    torch.manual_seed(0)
    encoder = RNNEncoder(8, 6, num_layers=2).eval()
    inputs = torch.randn(5, 7, 8)
    lengths = torch.full((5,), 7)
    unpacked = encoder(inputs, lengths)  # (B, T, 2H) through the fused kernel, no packing
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    expected = pad_packed_sequence(encoder.rnn(packed)[0], batch_first=True)[0]
    torch.testing.assert_close(unpacked, expected, rtol=0, atol=1e-6)


def test_sentence_gets_the_same_states_alone_as_inside_a_padded_batch():
    torch.manual_seed(0)
    encoder = RNNEncoder(8, 6).eval()
    inputs = torch.randn(3, 9, 8)
    lengths = torch.tensor([9, 4, 6])
    mixed = encoder(inputs, lengths)  # packed
    for b, n in enumerate(lengths.tolist()):
        alone = encoder(inputs[b : b + 1, :n], lengths[b : b + 1])  # one length: unpacked
        torch.testing.assert_close(alone[0], mixed[b, :n], rtol=0, atol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_padded_cpu_batch_runs_by_direction_with_the_packed_result_and_gradients(cell, layers, bidirectional):
    """The CPU's padded path (each direction unpacked, the backward one on reversed tokens) equals packing."""
    torch.manual_seed(layers)
    encoder = RNNEncoder(8, 6, num_layers=layers, cell=cell, bidirectional=bidirectional).double().train()
    inputs = torch.randn(4, 9, 8, dtype=torch.float64, requires_grad=True)
    lengths = torch.tensor([9, 3, 6, 1])
    got = encoder(inputs, lengths)
    packed = pack_padded_sequence(inputs, lengths, batch_first=True, enforce_sorted=False)
    expected = pad_packed_sequence(encoder.rnn(packed)[0], batch_first=True, total_length=9)[0]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-12)
    assert (got[1, 3:] == 0).all() and (got[3, 1:] == 0).all()
    assert type(got.grad_fn).__name__ == "MulBackward0"  # the padding zeroed by the by-direction path, not unpacked
    upstream = torch.randn_like(got)
    params = [inputs, *encoder.parameters()]
    for got_grad, expected_grad in zip(
        torch.autograd.grad((got * upstream).sum(), params), torch.autograd.grad((expected * upstream).sum(), params)
    ):
        torch.testing.assert_close(got_grad, expected_grad, rtol=0, atol=1e-12)


def _bidirectional_copy(encoder: DocumentEncoder, cell: type[nn.RNNBase]) -> nn.RNNBase:
    """A bidirectional torch RNN with the document encoder's weights."""
    layers = len(encoder.forward_rnns)
    reference = cell(encoder.forward_rnns[0].input_size, encoder.output_size // 2, layers, bidirectional=True)
    with torch.no_grad():
        for layer in range(layers):
            for name, _ in encoder.forward_rnns[layer].named_parameters():
                base = name.removesuffix("_l0")
                getattr(reference, f"{base}_l{layer}").copy_(getattr(encoder.forward_rnns[layer], name))
                getattr(reference, f"{base}_l{layer}_reverse").copy_(getattr(encoder.backward_rnns[layer], name))
    return reference.eval()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_document_encoder_reads_each_document_as_one_packed_sequence(cell):
    """Rows of the same document, in any batch order, get the states of a bidirectional RNN run over the document's
    sentences joined in reading order (``index``); other documents do not leak in."""
    torch.manual_seed(0)
    encoder = DocumentEncoder(5, 4, num_layers=2, cell=cell).eval()
    reference = _bidirectional_copy(encoder, nn.LSTM if cell == "lstm" else nn.GRU)
    lengths = torch.tensor([3, 5, 2, 4, 1])
    documents = torch.tensor([10, 10, 12, 10, 12])
    index = torch.tensor([1, 0, 7, 2, 6])  # reading order: rows 1, 0, 3 (document 10), then rows 4, 2 (document 12)
    inputs = torch.randn(5, 5, 5)
    mask = torch.arange(5)[None, :] < lengths[:, None]
    states = encoder(inputs, lengths, documents, index)  # (B, T, 2H)
    joined = [torch.cat([inputs[1, :5], inputs[0, :3], inputs[3, :4]]), torch.cat([inputs[4, :1], inputs[2, :2]])]
    expected = pad_packed_sequence(reference(pack_sequence(joined, enforce_sorted=False))[0], batch_first=True)[0]
    for row, document, start in [(1, 0, 0), (0, 0, 5), (3, 0, 8), (4, 1, 0), (2, 1, 1)]:
        n = int(lengths[row])
        torch.testing.assert_close(states[row, :n], expected[document, start : start + n], rtol=0, atol=1e-6)
    assert not states[~mask].any()  # zeros at padding


def test_document_encoder_gradients_reach_every_real_input():
    torch.manual_seed(0)
    encoder = DocumentEncoder(3, 2)
    inputs = torch.randn(2, 4, 3, requires_grad=True)
    documents, index, lengths = torch.tensor([0, 0]), torch.tensor([0, 1]), torch.tensor([4, 4])
    states = encoder(inputs, lengths, documents, index)
    states[0, 0].sum().backward()  # the first token's backward state reads the whole document
    assert (inputs.grad.abs().sum(-1) > 0).all()


def test_document_layout_given_has_fixed_shapes_and_no_host_sync():
    """With the layout built beforehand (on the CPU, where the data module builds it), the encoder gives the same
    states, and it runs on the meta device, where a tensor has no values: an operation whose output shape depends
    on values (boolean indexing, bincount, ``int(t.max())``), which costs a host sync on a GPU, raises there."""
    torch.manual_seed(0)
    encoder = DocumentEncoder(5, 4, num_layers=2).eval()
    lengths = torch.tensor([3, 5, 2, 4, 1])
    documents, index = torch.tensor([10, 10, 12, 10, 12]), torch.tensor([1, 0, 7, 2, 6])
    inputs = torch.randn(5, 5, 5)
    layout = document_layout(lengths, documents, index, width=5)
    assert layout["document_source"].shape == (2, 12) and layout["document_lengths"].tolist() == [12, 3]
    assert layout["document_target"].shape == (5, 5)
    torch.testing.assert_close(
        encoder(inputs, lengths, documents, index, layout), encoder(inputs, lengths, documents, index), rtol=0, atol=0
    )
    meta = {key: value.to("meta") for key, value in layout.items()}
    tensors = [t.to("meta") for t in (inputs, lengths, documents, index)]
    assert encoder.to("meta")(*tensors, meta).shape == (5, 5, 8)
    with pytest.raises((NotImplementedError, RuntimeError)):
        encoder(*tensors)  # without the layout it reads values
