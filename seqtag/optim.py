"""Learning-rate schedules that torch does not ship under these names."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


class InverseTimeDecay(LambdaLR):
    """lr_epoch = lr_0 / (1 + decay * epoch), the SGD schedule of Lample et al. 2016 and NCRF++.

    Args:
        optimizer: the optimizer.
        decay: decay rate per epoch. Default: 0.05

    Example (YAML)::

        model:
          optimizer: {class_path: torch.optim.SGD, init_args: {lr: 0.015, momentum: 0.9}}
          lr_scheduler: {class_path: seqtag.optim.InverseTimeDecay, init_args: {decay: 0.05}}
    """

    def __init__(self, optimizer: torch.optim.Optimizer, decay: float = 0.05) -> None:
        if decay < 0:
            raise ValueError(f"decay should be >= 0, got {decay}")
        self.decay = decay
        super().__init__(optimizer, lambda epoch: 1.0 / (1.0 + decay * epoch))


def fused_when_identical(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same optimizer with ``fused=True`` where that gives bit-for-bit the same steps, else ``optimizer``.

    That is ``torch.optim.SGD`` without momentum over float32 CPU parameters, configured without ``foreach`` or
    ``fused``: the fused step reads and writes each parameter once, where the default allocates the weight-decayed
    gradient and then updates. At NCRF++'s CoNLL-2003 size (a trained 26,793 x 50 word embedding, L2 1e-8, batches
    of 10) that was 0.78 ms of a 5.8 ms training step (scripts/bench_speed.py --profile 300, docs/speed.md). With
    momentum the fused step rounds differently (tested), so it is left as configured.
    """
    if type(optimizer) is not torch.optim.SGD:
        return optimizer
    groups = optimizer.param_groups
    options = ("momentum", "foreach", "fused", "differentiable")
    if any(group.get(option) for group in groups for option in options):
        return optimizer
    params = [p for group in groups for p in group["params"]]
    if not params or any(p.device.type != "cpu" or p.dtype != torch.float32 for p in params):
        return optimizer
    return torch.optim.SGD([{**group, "fused": True} for group in groups], **{**optimizer.defaults, "fused": True})
