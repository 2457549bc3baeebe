"""Dropout: the fast CPU mask keeps 1 - p of the elements; the locked mask is shared by a sequence's time steps."""

import pytest
import torch

from seqtag.modules.dropout import Dropout, LockedDropout


def test_dropout_keeps_one_minus_p_and_rescales():
    torch.manual_seed(0)
    x = torch.ones(200, 500)
    out = Dropout(0.3).train()(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    assert torch.allclose(out[kept], torch.full_like(out[kept], 1 / 0.7))
    assert torch.equal(Dropout(0.3).eval()(x), x)


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
