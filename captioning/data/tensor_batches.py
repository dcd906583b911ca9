"""Batches of cached features built by indexing tensors: no per-item Python work in the training loop."""
from __future__ import annotations

import math
from typing import Any, Iterator

import torch
from torch.nn.utils.rnn import pad_sequence

from captioning.data.feature_rows import StoreRows, prefetched
from captioning.data.sampler import EpochSampler


class TensorBatches:
    """Yields the same batches as `DataLoader(CaptionDataset, sampler, collate)` over cached features.

    features: a table on `device` (N, D), or Features with their grids, each batch a few index_selects; or
    `StoreRows`, each batch's rows read from the store's memory maps by a background thread, `prefetch` batches
    ahead (pinned when training on CUDA), so a store larger than memory streams at a batch's memory.
    All padded captions (P, L) live on `device`.
    """

    def __init__(self, features: torch.Tensor | Any, tokens: list[list[torch.Tensor]], sampler: EpochSampler,
                 batch_size: int, device: torch.device, prefetch: int = 2):
        counts = torch.tensor([len(captions) for captions in tokens])
        self.first_pair = torch.cumsum(counts, 0) - counts  # record -> index of its first caption
        flat = [caption for captions in tokens for caption in captions]
        self.lengths = torch.tensor([len(caption) for caption in flat])  # (P,) on the CPU: batch widths need no sync
        self.tokens = pad_sequence(flat, batch_first=True).to(device)  # (P, L)
        self.streamed = isinstance(features, StoreRows)
        self.features = features if self.streamed else features.to(device)  # (N, D), or Features (N, h * w, C)
        self.sampler, self.batch_size, self.device, self.prefetch = sampler, batch_size, device, prefetch

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.batch_size)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(record indices (b,), caption indices (b,)) of each batch, in sampler order."""
        items = torch.tensor(list(self.sampler), dtype=torch.long).view(-1, 2)  # (n, 2) record, caption
        pairs = self.first_pair[items[:, 0]] + items[:, 1]
        for start in range(0, len(items), self.batch_size):
            yield items[start:start + self.batch_size, 0], pairs[start:start + self.batch_size]

    def read(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, Any]]:
        """Each batch's indices with its features on the CPU, read from the store (the prefetching thread's work)."""
        pin = self.device.type == "cuda"
        for records, pairs in self.batches():
            inputs = self.features.read(records)
            yield records, pairs, inputs.pin_memory() if pin else inputs

    def __iter__(self) -> Iterator[dict]:
        if self.streamed:
            source = prefetched(self.read(), self.prefetch) if self.prefetch else self.read()
        else:
            source = ((records, pairs, None) for records, pairs in self.batches())
        for records, pairs, inputs in source:
            if inputs is None:
                inputs = self.features.index_select(0, records.to(self.device, non_blocking=True))
            else:
                inputs = inputs.to(self.device, non_blocking=True)
            width = int(self.lengths[pairs].max())
            tokens = self.tokens.index_select(0, pairs.to(self.device, non_blocking=True))[:, :width]
            yield {"input": inputs, "tokens": tokens, "lengths": self.lengths[pairs], "index": records}
