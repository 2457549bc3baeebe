"""ReferenceLSTM and ReferenceLSTMCell against torch.nn.LSTM / nn.LSTMCell with the same weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqtag.modules.lstm import ReferenceLSTM, ReferenceLSTMCell

TOLERANCE = {torch.float32: 1e-5, torch.float64: 1e-10}


def make_pair(num_layers: int, bidirectional: bool, dtype: torch.dtype, batch_first: bool = True, seed: int = 0):
    torch.manual_seed(seed)
    theirs = nn.LSTM(5, 4, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first).to(dtype)
    ours = ReferenceLSTM(5, 4, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first).to(dtype)
    ours.load_state_dict(theirs.state_dict())
    return ours, theirs


def run_torch(lstm: nn.LSTM, x, hx, lengths):
    if lengths is None:
        return lstm(x, hx)
    packed = pack_padded_sequence(x, lengths, batch_first=lstm.batch_first, enforce_sorted=False)
    out, states = lstm(packed, hx)
    out, _ = pad_packed_sequence(out, batch_first=lstm.batch_first, total_length=x.size(1 if lstm.batch_first else 0))
    return out, states


def outputs_and_grads(module, run, x, hx, weights):
    x = x.clone().requires_grad_()
    hx = tuple(s.clone().requires_grad_() for s in hx) if hx is not None else None
    module.zero_grad()
    out, (h_n, c_n) = run(module, x, hx)
    loss = (out * weights[0]).sum() + (h_n * weights[1]).sum() + (c_n * weights[2]).sum()
    loss.backward()
    grads = {name: p.grad for name, p in module.named_parameters()}
    grads["input"] = x.grad
    if hx is not None:
        grads["h_0"], grads["c_0"] = hx[0].grad, hx[1].grad
    return out.detach(), h_n.detach(), c_n.detach(), grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("num_layers", [1, 2, 3])
@pytest.mark.parametrize("variable_lengths", [False, True])
def test_matches_nn_lstm(dtype, bidirectional, num_layers, variable_lengths):
    ours, theirs = make_pair(num_layers, bidirectional, dtype)
    b, t, d = 4, 6, 2 if bidirectional else 1
    x = torch.randn(b, t, 5, dtype=dtype)
    lengths = torch.tensor([3, 6, 1, 4]) if variable_lengths else None
    hx = tuple(torch.randn(num_layers * d, b, 4, dtype=dtype) for _ in range(2))
    weights = (
        torch.randn(b, t, d * 4, dtype=dtype),
        torch.randn(num_layers * d, b, 4, dtype=dtype),
        torch.randn(num_layers * d, b, 4, dtype=dtype),
    )
    expected = outputs_and_grads(theirs, lambda m, x, hx: run_torch(m, x, hx, lengths), x, hx, weights)
    actual = outputs_and_grads(ours, lambda m, x, hx: m(x, hx, lengths=lengths), x, hx, weights)
    tol = TOLERANCE[dtype]
    for name, a, e in zip(["output", "h_n", "c_n"], actual[:3], expected[:3]):
        torch.testing.assert_close(a, e, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")
    assert actual[3].keys() == expected[3].keys()
    for name, e in expected[3].items():
        torch.testing.assert_close(actual[3][name], e, rtol=tol, atol=tol, msg=lambda m, name=name: f"{name}: {m}")
    if variable_lengths:
        pad = torch.arange(t).expand(b, t) >= lengths.unsqueeze(1)
        assert (actual[0][pad] == 0).all()
        assert (actual[3]["input"][pad] == 0).all()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_time_major_and_default_state(bidirectional):
    ours, theirs = make_pair(2, bidirectional, torch.float64, batch_first=False)
    x = torch.randn(5, 3, 5, dtype=torch.float64)  # (T, B, E)
    out, (h_n, c_n) = ours(x)
    ref_out, (ref_h, ref_c) = theirs(x)
    torch.testing.assert_close(out, ref_out, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h_n, ref_h, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(c_n, ref_c, rtol=1e-10, atol=1e-10)


def test_state_dict_round_trip_and_init():
    torch.manual_seed(0)
    ours = ReferenceLSTM(5, 4, num_layers=3, bidirectional=True, bias=True)
    theirs = nn.LSTM(5, 4, num_layers=3, bidirectional=True, batch_first=True)
    ours_shapes = {k: v.shape for k, v in ours.state_dict().items()}
    theirs_shapes = {k: v.shape for k, v in theirs.state_dict().items()}
    assert ours_shapes == theirs_shapes
    theirs.load_state_dict(ours.state_dict())
    for name, p in theirs.named_parameters():
        assert torch.equal(p, getattr(ours, name))
    bound = 1 / math.sqrt(4)
    for p in ours.parameters():
        assert p.abs().max() <= bound and p.std() > bound / 4
    no_bias = ReferenceLSTM(5, 4, bias=False)
    assert set(no_bias.state_dict()) == set(nn.LSTM(5, 4, bias=False).state_dict())


def test_cell_matches_nn_lstm_cell():
    torch.manual_seed(0)
    theirs = nn.LSTMCell(5, 4).double()
    ours = ReferenceLSTMCell(5, 4).double()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 5, dtype=torch.float64)
    hx = (torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64))
    for a, e in zip(ours(x, hx), theirs(x, hx)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)
    for a, e in zip(ours(x), theirs(x)):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_dropout_between_layers_only_in_training():
    torch.manual_seed(0)
    ours = ReferenceLSTM(5, 4, num_layers=2, dropout=1.0)
    x = torch.randn(2, 3, 5)
    # Dropout 1.0 zeroes the input of layer 1, so the output is layer 1 run on zeros.
    ours.train()
    layer1 = nn.LSTM(4, 4, batch_first=True)
    layer1.load_state_dict({k.replace("l1", "l0"): v for k, v in ours.state_dict().items() if "l1" in k})
    torch.testing.assert_close(ours(x)[0], layer1(torch.zeros(2, 3, 4))[0], rtol=1e-6, atol=1e-6)
    # Eval: no dropout.
    ours.eval()
    theirs = nn.LSTM(5, 4, num_layers=2, dropout=1.0, batch_first=True).eval()
    theirs.load_state_dict(ours.state_dict())
    torch.testing.assert_close(ours(x)[0], theirs(x)[0], rtol=1e-6, atol=1e-6)
    # No dropout after the last layer: a 1-layer LSTM in training is deterministic.
    with pytest.warns(UserWarning, match="dropout=0.5 and num_layers=1"):
        single = ReferenceLSTM(5, 4, dropout=0.5).train()
    torch.testing.assert_close(single(x)[0], single(x)[0])


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="hidden_size should be a positive int, got 0"):
        ReferenceLSTM(5, 0)
    with pytest.raises(ValueError, match="num_layers should be a positive int, got 0"):
        ReferenceLSTM(5, 4, num_layers=0)
    with pytest.raises(ValueError, match=r"dropout should be a number in \[0, 1\], got 1.5"):
        ReferenceLSTM(5, 4, num_layers=2, dropout=1.5)
    lstm = ReferenceLSTM(5, 4, bidirectional=True)
    with pytest.raises(ValueError, match=r"Expected input of shape \(B, T, 5\), got \(2, 3, 6\)"):
        lstm(torch.randn(2, 3, 6))
    with pytest.raises(ValueError, match=r"Expected h_0 of shape \(2, 2, 4\), got \(1, 2, 4\)"):
        lstm(torch.randn(2, 3, 5), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 4)))
    with pytest.raises(ValueError, match=r"lengths should be in \[1, 3\], got \[0, 3\]"):
        lstm(torch.randn(2, 3, 5), lengths=torch.tensor([0, 3]))
