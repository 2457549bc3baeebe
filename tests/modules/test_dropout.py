import pytest
import torch

from seqtag.modules.dropout import Dropout, LockedDropout


@pytest.mark.parametrize("p", [0.05, 0.33, 0.5, 0.9])
def test_dropout_zeroes_a_p_fraction_and_keeps_the_mean(p):
    torch.manual_seed(0)
    x = torch.ones(500, 400)
    y = Dropout(p).train()(x)
    zero = (y == 0).float().mean().item()
    assert abs(zero - p) < 0.005  # 200,000 draws: std below 0.0012
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / (1 - p)))
    assert abs(y.mean().item() - 1.0) < 0.02


def test_dropout_masks_vary_and_follow_the_seed():
    x = torch.ones(64, 64)
    torch.manual_seed(3)
    a, b = Dropout(0.5)(x), Dropout(0.5)(x)
    torch.manual_seed(3)
    assert torch.equal(Dropout(0.5)(x), a)
    assert not torch.equal(a, b)


def test_dropout_gradient_is_the_mask():
    torch.manual_seed(0)
    x = torch.randn(7, 9, requires_grad=True)
    y = Dropout(0.5)(x)
    y.sum().backward()
    torch.testing.assert_close(x.grad, (y != 0).float() * 2.0)


def test_dropout_is_identity_in_eval_and_at_zero():
    x = torch.randn(5, 3)
    assert torch.equal(Dropout(0.5).eval()(x), x)
    assert torch.equal(Dropout(0.0)(x), x)
    assert torch.equal(Dropout(1.0)(x), torch.zeros_like(x))


def test_locked_dropout_shares_the_mask_over_time():
    torch.manual_seed(0)
    x = torch.randn(64, 7, 300)
    out = LockedDropout(0.5).train()(x)
    dropped = out == 0  # (B, T, E)
    # A feature is dropped at every time step of a sequence or at none.
    assert torch.equal(dropped, dropped[:, :1].expand_as(dropped))
    assert abs(dropped[:, 0].float().mean().item() - 0.5) < 0.02
    assert not torch.equal(dropped[0, 0], dropped[1, 0])  # each sequence draws its own mask
    assert torch.allclose(out[~dropped], 2 * x[~dropped])
    assert torch.equal(LockedDropout(0.5).eval()(x), x)


def test_locked_dropout_rejects_a_bad_probability():
    with pytest.raises(ValueError, match="dropout probability"):
        LockedDropout(1.0)
