import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqtag.modules.encoder import RNNEncoder


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
