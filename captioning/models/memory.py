"""What an encoder hands a decoder: the pooled vector and, where the backbone has one, the spatial grid."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Features:
    """pooled (B, D): the last hidden layer; grid (B, N, C) or None: N = h * w cells before pooling.

    Decoders read what they need: Show and Tell the pooled vector, attention decoders the grid.
    It has the few tensor methods the training and decoding code call on a batch (`to`, `float`, `len`,
    `pin_memory`, `index_select`).
    """
    pooled: torch.Tensor
    grid: torch.Tensor | None = None

    def to(self, device, non_blocking: bool = False) -> "Features":
        grid = self.grid.to(device, non_blocking=non_blocking) if self.grid is not None else None
        return Features(self.pooled.to(device, non_blocking=non_blocking), grid)

    def float(self) -> "Features":
        return Features(self.pooled.float(), self.grid.float() if self.grid is not None else None)

    def pin_memory(self) -> "Features":
        return Features(self.pooled.pin_memory(), self.grid.pin_memory() if self.grid is not None else None)

    def index_select(self, dim: int, rows: torch.Tensor) -> "Features":
        """The rows of the batch (dim 0 only), like `Tensor.index_select`."""
        if dim != 0:
            raise ValueError(f"Features are indexed along the batch (dim 0), not dim {dim}")
        grid = self.grid.index_select(0, rows) if self.grid is not None else None
        return Features(self.pooled.index_select(0, rows), grid)

    @staticmethod
    def stack(items: list["Features"]) -> "Features":
        """One batch from per-item Features (pooled (D,), grid (N, C) or None)."""
        grid = torch.stack([item.grid for item in items]) if items[0].grid is not None else None
        return Features(torch.stack([item.pooled for item in items]), grid)

    def __len__(self) -> int:
        return self.pooled.size(0)

    @property
    def device(self) -> torch.device:
        return self.pooled.device
