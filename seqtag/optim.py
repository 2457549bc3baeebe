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
