"""Records into batches: (input, caption) items for images and clips, labelled clips, and their collates.

A dataset item's input comes from a `load_input(record index)` function (an `ImageLoader`, a
`clips.ClipLoader`, or a lookup into cached features), so the same datasets serve every input kind.
"""
from __future__ import annotations

from typing import Callable

import torch
from PIL import Image
from torch.utils.data import Dataset

from captioning.data.batches import ClipInput, Clips, stack_clips
from captioning.data.clips import ClipRecord
from captioning.data.images import MAX_IMAGE_PIXELS, load_rgb
from captioning.data.records import CaptionRecord
from captioning.vocab import Vocabulary


class ImageLoader:
    """`index -> normalised image tensor (3, H, W)` for a list of records.

    `size`: let JPEGs decode at reduced scale down to this many pixels per side (`data.jpeg_draft`, with
    `transforms.decode_size(preprocess)`); None decodes at full size. `max_pixels`: `data.max_image_pixels`.
    `keep=True` (`data.keep_in_memory`) holds each decoded image in memory after its first read and transforms it anew
    each time (augmentation still draws), for small data sets whose files cost more to decode than to train on.
    """

    def __init__(self, records: list[CaptionRecord], transform: Callable[[Image.Image], torch.Tensor],
                 size: int | None = None, max_pixels: int | None = MAX_IMAGE_PIXELS, keep: bool = False):
        self.paths = [record.image_path for record in records]
        self.transform = transform
        self.size, self.max_pixels = size, max_pixels
        self.kept: dict[int, Image.Image] | None = {} if keep else None

    def __call__(self, index: int) -> torch.Tensor:
        if self.kept is None:
            return self.transform(load_rgb(self.paths[index], self.size, self.max_pixels))
        if index not in self.kept:
            self.kept[index] = load_rgb(self.paths[index], self.size, self.max_pixels)
        return self.transform(self.kept[index])


class CaptionDataset(Dataset):
    """Items `(record index, caption index)` -> {input, tokens, index}.

    `load_input(record index)` gives the image tensor, or a cached feature vector: the dataset
    does not care which, so cached-feature training reuses all of it.
    """

    def __init__(self, records: list[CaptionRecord], vocab: Vocabulary, max_length: int,
                 load_input: Callable[[int], torch.Tensor]):
        self.records = records
        self.load_input = load_input
        self.tokens = [[torch.tensor(vocab.encode(caption, max_length)) for caption in record.captions]
                       for record in records]

    def __len__(self) -> int:
        return len(self.records)

    def caption_lengths(self) -> list[list[int]]:
        """Tokens of every caption, per record (what length bucketing sorts by)."""
        return [[len(caption) for caption in captions] for captions in self.tokens]

    def __getitem__(self, item: tuple[int, int]) -> dict:
        index, caption = item
        return {"input": self.load_input(index), "tokens": self.tokens[index][caption], "index": index}


def collate(batch: list[dict]) -> dict:
    """Stack inputs and right-pad token sequences with 0 (`<pad>`)."""
    lengths = torch.tensor([len(item["tokens"]) for item in batch])
    tokens = torch.zeros(len(batch), int(lengths.max()), dtype=torch.long)
    for row, item in enumerate(batch):
        tokens[row, : len(item["tokens"])] = item["tokens"]
    inputs = [item["input"] for item in batch]
    stack = getattr(type(inputs[0]), "stack", torch.stack)  # tensors, or containers such as Features (pooled, grid)
    return {"input": stack(inputs), "tokens": tokens, "lengths": lengths,
            "index": torch.tensor([item["index"] for item in batch])}


class LabelledClips(Dataset):
    """Items `(record index, _)` -> {input, label, index}; the `_` keeps `EpochSampler` items usable as they are."""

    def __init__(self, records: list[ClipRecord], classes: list[str], load_input: Callable[[int], ClipInput]):
        index_of = {name: i for i, name in enumerate(classes)}
        self.labels = [index_of[record.label] for record in records]
        self.load_input = load_input

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        index, _ = item
        return {"input": self.load_input(index), "label": self.labels[index], "index": index}


def collate_labelled_clips(batch: list[dict]) -> dict:
    return {"input": stack_clips([item["input"] for item in batch]),
            "label": torch.tensor([item["label"] for item in batch]),
            "index": torch.tensor([item["index"] for item in batch])}


def collate_captioned_clips(batch: list[dict]) -> dict:
    """`CaptionDataset` items whose input is a clip: tokens padded by `collate`, clips stacked into `Clips`."""
    out = collate([{**item, "input": item["input"][1]} for item in batch])  # "input" holds the masks here
    out["input"] = Clips(torch.stack([item["input"][0] for item in batch]), out["input"])
    return out
