"""The per-epoch order of (record, caption) items: deterministic, resumable, shardable, length-bucketed."""
from __future__ import annotations

from typing import Iterator

import torch
from torch.utils.data import Sampler

SAMPLING_MODES = ("random_caption", "pairs", "grouped")


class EpochSampler(Sampler):
    """Deterministic per-epoch order of (record, caption) pairs, so a resumed run sees the same batches.

    mode `pairs`: every (image, caption) pair once per epoch.
    mode `grouped`: every pair once per epoch, an image's captions next to each other (images shuffled, then each
    image's captions in a shuffled order), so a batch holds all the captions of few images and a decoder that encodes
    an image's memory once per batch (the Transformer) does it once, not once per caption (ruotianluo's seq_per_img).
    mode `random_caption`: every image once per epoch with one caption drawn at random.
    `skip` drops the first items of the epoch (resuming mid-epoch).
    `bucket` > 0 with `lengths` (tokens of each record's captions): the shuffled epoch is cut into pools
    of `bucket` batches, each pool sorted by caption length and cut into batches, and the whole batches
    shuffled, so a batch holds captions of similar length and the LSTM runs over little padding.
    """

    def __init__(self, caption_counts: list[int], mode: str = "random_caption", shuffle: bool = True, seed: int = 0,
                 batch_size: int = 1, rank: int = 0, world_size: int = 1, lengths: list[list[int]] | None = None,
                 bucket: int = 0):
        if mode not in SAMPLING_MODES:
            raise ValueError(f"data.sampling must be one of {', '.join(SAMPLING_MODES)}, got {mode!r}")
        if batch_size % world_size:
            raise ValueError(f"train.batch_size={batch_size} (the global batch) must divide by the {world_size} processes")
        if bucket < 0:
            raise ValueError(f"train.bucket_pool must be >= 0, got {bucket}")
        if bucket and mode == "grouped":
            raise ValueError("train.bucket_pool sorts captions by length, which parts an image's captions: "
                             "set it to 0 with data.sampling=grouped")
        if bucket and lengths is None:
            raise ValueError("length bucketing needs the caption lengths")
        self.caption_counts, self.lengths, self.bucket = caption_counts, lengths, bucket
        self.mode, self.shuffle, self.seed = mode, shuffle, seed
        self.batch_size, self.rank, self.world_size = batch_size, rank, world_size
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def items(self) -> list[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.mode == "grouped":
            return self.grouped(generator)
        if self.mode == "pairs":
            items = [(index, caption) for index, count in enumerate(self.caption_counts) for caption in range(count)]
        else:
            counts = torch.tensor(self.caption_counts, dtype=torch.float64)
            draws = (torch.rand(len(counts), generator=generator, dtype=torch.float64) * counts).long().tolist()
            items = list(enumerate(draws))
        if self.shuffle:
            items = [items[i] for i in torch.randperm(len(items), generator=generator).tolist()]
        if self.bucket:
            items = self.bucketed(items, generator)
        return items

    def grouped(self, generator: torch.Generator) -> list[tuple[int, int]]:
        images = range(len(self.caption_counts))
        if self.shuffle:
            images = torch.randperm(len(self.caption_counts), generator=generator).tolist()
        items = []
        for index in images:
            count = self.caption_counts[index]
            captions = torch.randperm(count, generator=generator).tolist() if self.shuffle else range(count)
            items += [(index, caption) for caption in captions]
        return items

    def bucketed(self, items: list[tuple[int, int]], generator: torch.Generator) -> list[tuple[int, int]]:
        pool, size = self.bucket * self.batch_size, self.batch_size
        batches = []
        for start in range(0, len(items), pool):
            chunk = sorted(items[start:start + pool], key=lambda item: self.lengths[item[0]][item[1]])
            batches += [chunk[i:i + size] for i in range(0, len(chunk), size)]
        # Only the last pool can end in a short batch. It stays last: batches are cut from the item stream,
        # so a short one in the middle would shift every batch after it.
        short = batches.pop() if batches and len(batches[-1]) < size else []
        if self.shuffle:
            batches = [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]
        return [item for batch in batches for item in batch] + short

    def __iter__(self) -> Iterator[tuple[int, int]]:
        items = self.items()[self.skip:]
        if self.world_size == 1:
            return iter(items)
        # Several processes: each takes its slice of every whole global batch, so together they see the
        # batch a single process would; a last partial batch is dropped so all ranks step together.
        per = self.batch_size // self.world_size
        whole = len(items) // self.batch_size * self.batch_size
        return iter([item for start in range(0, whole, self.batch_size)
                     for item in items[start + self.rank * per: start + (self.rank + 1) * per]])

    def __len__(self) -> int:
        total = sum(self.caption_counts) if self.mode != "random_caption" else len(self.caption_counts)
        remaining = max(total - self.skip, 0)
        if self.world_size == 1:
            return remaining
        return remaining // self.batch_size * (self.batch_size // self.world_size)
