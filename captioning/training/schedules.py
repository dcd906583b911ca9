"""Learning-rate schedules torch does not ship, built the way conf/scheduler/*.yaml builds torch's own: a partial
that takes the optimizer (`scheduler=noam`)."""
from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


class NoamFactor:
    """The multiplier of the base learning rate after `step` scheduler steps: min((s + 1) / warmup,
    sqrt(warmup / (s + 1))), linear up to 1 at s = warmup - 1, then falling as 1 / sqrt(s + 1).

    A class, not a closure: LambdaLR saves an object's attributes in its state dict (plain data a checkpoint loads
    with weights_only=True) and restores them on resume."""

    def __init__(self, warmup: int):
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"scheduler.build.warmup={warmup!r}: expected an integer >= 1")
        self.warmup = warmup

    def __call__(self, step: int) -> float:
        s = step + 1
        return min(s / self.warmup, math.sqrt(self.warmup / s))


def noam(optimizer: torch.optim.Optimizer, warmup: int) -> LambdaLR:
    """The schedule of the Transformer (Vaswani et al. 2017, eq. 3), peaking at the optimizer's own lr at the end of
    warmup, rather than at d_model^-0.5 x warmup^-0.5: the peak is optim.lr, which a sweep tunes directly."""
    return LambdaLR(optimizer, NoamFactor(warmup))
