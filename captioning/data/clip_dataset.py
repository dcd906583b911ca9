"""Turning clip records into batches: the `Clips` batch, labelled-clip items, collates, per-frame feature caching."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from captioning.data.clips import ClipRecord
from captioning.data.dataset import collate

ClipInput = tuple[torch.Tensor, torch.Tensor]  # frames (T, C, H, W) or features (T, D), mask (T,)


@dataclass
class Clips:
    """Frames (B, T, C, H, W), or per-frame features (B, T, D), with mask (B, T): True where a frame is real.

    It has the few tensor methods the training engine calls on a batch input (`to`, `float`,
    `pin_memory`), so the caption loop, validation and decoding take clips unchanged.
    """
    frames: torch.Tensor
    mask: torch.Tensor

    def to(self, device, non_blocking: bool = False) -> "Clips":
        return Clips(self.frames.to(device, non_blocking=non_blocking), self.mask.to(device, non_blocking=non_blocking))

    def float(self) -> "Clips":
        return Clips(self.frames.float(), self.mask)

    def pin_memory(self) -> "Clips":
        return Clips(self.frames.pin_memory(), self.mask.pin_memory())

    def __len__(self) -> int:
        return self.mask.size(0)


def stack_clips(inputs: list[ClipInput]) -> Clips:
    frames, mask = zip(*inputs)
    return Clips(torch.stack(frames), torch.stack(mask))


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


class _Indexed(Dataset):
    def __init__(self, load: Callable[[int], ClipInput], count: int):
        self.load, self.count = load, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        return {"input": self.load(index), "label": 0, "index": index}


@torch.no_grad()
def cache_frame_features(frame_encoder: torch.nn.Module, load_input: Callable[[int], ClipInput], count: int, *,
                         batch_size: int, device: torch.device, num_workers: int = 0,
                         desc: str = "encoding clips") -> Callable[[int], ClipInput]:
    """Run a frozen frame encoder once over every clip -> `index -> (features (T, D), mask (T,))` on the CPU."""
    frame_encoder.eval()
    loader = DataLoader(_Indexed(load_input, count), batch_size=batch_size, collate_fn=collate_labelled_clips,
                        num_workers=num_workers)
    features, masks = None, None
    for batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        clips = frame_encoder(batch["input"].to(device))
        if features is None:
            features = torch.zeros(count, *clips.frames.shape[1:])
            masks = torch.zeros(count, clips.mask.size(1), dtype=torch.bool)
        features[batch["index"]] = clips.frames.float().cpu()
        masks[batch["index"]] = clips.mask.cpu()
    return lambda index: (features[index], masks[index])
