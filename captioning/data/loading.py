"""From a data config to checked records and batches: the one path every task reads its data through."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from captioning.data.clips import ClipRecord, check_clip
from captioning.data.datasets import collate
from captioning.data.images import check_image
from captioning.data.records import DataError, check_inputs, clean_captions
from captioning.data.sources import read_source
from captioning.data.transforms import augments

VERIFY_MODES = ("none", "header", "full")


def _kind(splits: dict[str, list]) -> str:
    """"clips" when the source gives clip records, else "images"."""
    first = next((records[0] for records in splits.values() if records), None)
    return "clips" if isinstance(first, ClipRecord) else "images"


def _reject_image_options(data_cfg: Any) -> None:
    if augments(data_cfg.get("augment")):
        raise DataError("data.augment is not supported for clips (per-frame random transforms would break motion)")
    if data_cfg.get("features"):
        raise DataError("data.features (image feature stores) is not supported for clips; "
                        "a frozen frame encoder's features are computed once per run instead")


def load_splits(data_cfg: Any, verify: tuple[str, ...] = ("train", "val"), captions: bool = True) -> dict[str, list]:
    """Read `data_cfg.source` -> {split: [CaptionRecord or ClipRecord]}, checked now rather than mid-run.

    The `verify` splits must be there and not empty, and every input in them is opened per
    `data.verify_images` (none | header | full) and `data.on_bad_image`. With `captions`, empty
    captions are dropped per `data.on_bad_caption` (tasks that only need labels pass False).
    `data_cfg` is a DictConfig or a plain dict.
    """
    mode = data_cfg.get("verify_images", "full")
    if mode not in VERIFY_MODES:
        raise DataError(f"data.verify_images must be one of {', '.join(VERIFY_MODES)}, got {mode!r}")
    splits = read_source(data_cfg["source"])
    what = _kind(splits)
    if what == "clips":
        _reject_image_options(data_cfg)
    for split in verify:
        if not splits.get(split):
            raise DataError(f"data: the source gives no '{split}' {what}")
    check = check_clip if what == "clips" else check_image
    for split, records in splits.items():
        if captions:
            records = clean_captions(records, f"{split} captions", data_cfg.get("on_bad_caption", "error"))
        if mode != "none" and split in verify:
            records = check_inputs(records, check, data_cfg.get("on_bad_image", "error"), full=mode == "full",
                                   what=what, desc=f"checking {split} {what}")
        splits[split] = records
    return splits


def make_loader(dataset: Dataset, sampler: Sampler, batch_size: int, data_cfg: Any, device: torch.device,
                collate_fn=collate) -> DataLoader:
    """A DataLoader with `data.num_workers` and `data.pin_memory` (auto: pin when training on CUDA)."""
    pin_memory = data_cfg.get("pin_memory", "auto")
    pin = device.type == "cuda" if pin_memory == "auto" else bool(pin_memory)
    # An explicit generator keeps DataLoader start-up from consuming the global RNG, so resumes are exact.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, pin_memory=pin,
                      num_workers=data_cfg.get("num_workers", 0), generator=torch.Generator())
