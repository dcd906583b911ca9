"""The batch types the data layer hands the models: `Features` (what an encoder hands a decoder, and what a
feature store holds) and `Clips` (frames or per-frame features with their mask)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass
class Features:
    """pooled (B, D): the last hidden layer; grid (B, N, C) or None: N = h * w cells before pooling, or N regions;
    mask (B, N) bool or None: True at real cells, False at padding (None: every cell is real).

    Region features (bottom-up attention: 10-100 regions per image) pad each image to the batch's largest N;
    attention decoders put no weight on padding. Decoders read what they need: Show and Tell the pooled vector,
    attention decoders the grid. It has the few tensor methods the training and decoding code call on a batch
    (`to`, `float`, `len`, `pin_memory`, `index_select`).
    """
    pooled: torch.Tensor
    grid: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    def __post_init__(self):
        if self.mask is not None and (self.grid is None or self.mask.dtype != torch.bool
                                      or self.mask.shape != self.grid.shape[:-1]):
            grid = None if self.grid is None else tuple(self.grid.shape)
            raise ValueError(f"Features.mask must be bool (B, N) over a grid (B, N, C) (one item: (N,) over (N, C)); "
                             f"got a {self.mask.dtype} mask of shape {tuple(self.mask.shape)} and grid {grid}")

    def _map(self, fn) -> Features:
        """fn applied to every tensor held (the mask keeps its bool dtype: fn must not change dtypes for it)."""
        return Features(fn(self.pooled), None if self.grid is None else fn(self.grid),
                        None if self.mask is None else fn(self.mask))

    def to(self, device, non_blocking: bool = False) -> Features:
        return self._map(lambda t: t.to(device, non_blocking=non_blocking))

    def float(self) -> Features:
        return Features(self.pooled.float(), self.grid.float() if self.grid is not None else None, self.mask)

    def pin_memory(self) -> Features:
        return self._map(torch.Tensor.pin_memory)

    def index_select(self, dim: int, rows: torch.Tensor) -> Features:
        """The rows of the batch (dim 0 only), like `Tensor.index_select`."""
        if dim != 0:
            raise ValueError(f"Features are indexed along the batch (dim 0), not dim {dim}")
        return self._map(lambda t: t.index_select(0, rows))

    @staticmethod
    def padded(pooled: torch.Tensor, grids: list[torch.Tensor],
               masks: list[torch.Tensor | None] | None = None) -> Features:
        """pooled (B, D) and B grids (N_i, C), each with its mask (N_i,) or None (all real) -> grid (B, N, C)
        zero-padded to the largest N_i, with its mask (B, N); the mask is None when no cell is padding and no
        item had a mask."""
        masks = masks if masks is not None else [None] * len(grids)
        sizes = [grid.size(0) for grid in grids]
        if len(set(sizes)) == 1 and all(mask is None for mask in masks):
            return Features(pooled, torch.stack(grids))
        N = max(sizes)
        grid = torch.stack([F.pad(g, (0, 0, 0, N - g.size(0))) for g in grids])
        real = [torch.ones(n, dtype=torch.bool, device=pooled.device) if m is None else m.bool()
                for n, m in zip(sizes, masks, strict=True)]
        return Features(pooled, grid, torch.stack([F.pad(m, (0, N - m.size(0)), value=False) for m in real]))

    @staticmethod
    def stack(items: list[Features]) -> Features:
        """One batch from per-item Features (pooled (D,), grid (N_i, C) or None, mask (N_i,) or None), grids
        padded to the largest N_i as `padded` does."""
        pooled = torch.stack([item.pooled for item in items])
        if items[0].grid is None:
            return Features(pooled)
        return Features.padded(pooled, [item.grid for item in items], [item.mask for item in items])

    def __len__(self) -> int:
        return self.pooled.size(0)

    @property
    def device(self) -> torch.device:
        return self.pooled.device


ClipInput = tuple[torch.Tensor, torch.Tensor]  # frames (T, C, H, W) or features (T, D), mask (T,)


@dataclass
class Clips:
    """Frames (B, T, C, H, W), or per-frame features (B, T, D), with mask (B, T): True where a frame is real.

    It has the few tensor methods the training engine calls on a batch input (`to`, `float`,
    `pin_memory`, `index_select`), so the caption loop, validation and decoding take clips unchanged.
    """
    frames: torch.Tensor
    mask: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> "Clips":
        return Clips(self.frames.to(device, non_blocking=non_blocking), self.mask.to(device, non_blocking=non_blocking))

    def float(self) -> "Clips":
        return Clips(self.frames.float(), self.mask)

    def pin_memory(self) -> "Clips":
        return Clips(self.frames.pin_memory(), self.mask.pin_memory())

    def index_select(self, dim: int, rows: torch.Tensor) -> "Clips":
        """The clips of `rows` (dim 0 only), like `Tensor.index_select`."""
        if dim != 0:
            raise ValueError(f"Clips are indexed along the batch (dim 0), not dim {dim}")
        return Clips(self.frames.index_select(0, rows), self.mask.index_select(0, rows))

    def __len__(self) -> int:
        return self.mask.size(0)

    @property
    def device(self) -> torch.device:
        return self.frames.device


def stack_clips(inputs: list[ClipInput]) -> Clips:
    frames, mask = zip(*inputs, strict=True)
    return Clips(torch.stack(frames), torch.stack(mask))
