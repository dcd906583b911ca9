"""What an encoder hands a decoder: the pooled vector and, where the backbone has one, the spatial grid."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Features:
    """pooled (B, D): the last hidden layer; grid (B, N, C) or None: N = h * w cells before pooling.

    Decoders read what they need: Show and Tell the pooled vector, attention decoders the grid.
    It has the few tensor methods the training and decoding code call on a batch (`to`, `float`, `len`).
    """
    pooled: torch.Tensor
    grid: torch.Tensor | None = None

    def to(self, device, non_blocking: bool = False) -> "Features":
        grid = self.grid.to(device, non_blocking=non_blocking) if self.grid is not None else None
        return Features(self.pooled.to(device, non_blocking=non_blocking), grid)

    def float(self) -> "Features":
        return Features(self.pooled.float(), self.grid.float() if self.grid is not None else None)

    def __len__(self) -> int:
        return self.pooled.size(0)

    @property
    def device(self) -> torch.device:
        return self.pooled.device
