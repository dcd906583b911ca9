"""Batches of cached features built by indexing tensors: no per-item Python work in the training loop."""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch.nn.utils.rnn import pad_sequence

from captioning.data.sampler import EpochSampler


class TensorBatches:
    """Yields the same batches as `DataLoader(CaptionDataset, sampler, collate)` over cached features.

    features (N, D), or Features with their grids, and all padded captions (P, L) live on `device`; each batch
    is a few index_selects.
    With features cached, per-item Python (__getitem__ + collate) is what limits training speed.
    """

    def __init__(self, features: torch.Tensor | Any, tokens: list[list[torch.Tensor]], sampler: EpochSampler,
                 batch_size: int, device: torch.device):
        counts = torch.tensor([len(captions) for captions in tokens])
        self.first_pair = torch.cumsum(counts, 0) - counts  # record -> index of its first caption
        flat = [caption for captions in tokens for caption in captions]
        self.lengths = torch.tensor([len(caption) for caption in flat])  # (P,) on the CPU: batch widths need no sync
        self.tokens = pad_sequence(flat, batch_first=True).to(device)  # (P, L)
        self.features = features.to(device)  # (N, D), or Features: pooled (N, D), grid (N, h * w, C)
        self.sampler, self.batch_size, self.device = sampler, batch_size, device

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def __iter__(self) -> Iterator[dict]:
        items = torch.tensor(list(self.sampler), dtype=torch.long).view(-1, 2)  # (n, 2) record, caption
        pairs = self.first_pair[items[:, 0]] + items[:, 1]
        for start in range(0, len(items), self.batch_size):
            records, batch_pairs = items[start:start + self.batch_size, 0], pairs[start:start + self.batch_size]
            width = int(self.lengths[batch_pairs].max())
            index = batch_pairs.to(self.device, non_blocking=True)
            yield {"input": self.features.index_select(0, records.to(self.device, non_blocking=True)),
                   "tokens": self.tokens.index_select(0, index)[:, :width], "lengths": self.lengths[batch_pairs],
                   "index": records}
