"""From a data config to checked records and batches: the one path every task reads its data through."""
from __future__ import annotations

import functools
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from captioning.data.clips import ClipRecord, check_clip
from captioning.data.datasets import collate
from captioning.data.images import MAX_IMAGE_PIXELS, check_image
from captioning.data.records import DataError, check_inputs, check_overlap, clean_captions
from captioning.data.sources import read_source
from captioning.data.transforms import augments, decode_size
from captioning.registry import plain

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


def _flag(data_cfg: Any, key: str) -> bool:
    value = data_cfg.get(key, False)
    if not isinstance(value, bool):
        raise DataError(f"data.{key} must be true or false, got {value!r}")
    return value


def max_image_pixels(data_cfg: Any) -> int | None:
    """`data.max_image_pixels`: a whole number of pixels, 0 or null for no limit (absent: the default limit)."""
    value = data_cfg.get("max_image_pixels", MAX_IMAGE_PIXELS)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        raise DataError(f"data.max_image_pixels must be a whole number of pixels (0 or null: no limit), got {value!r}")
    return value or None


def image_options(data_cfg: Any, preprocess: dict) -> dict:
    """The `ImageLoader` / `load_rgb` arguments a data config asks for: the pixel limit, and with
    `data.jpeg_draft` the reduced JPEG decode size the encoder's preprocessing allows."""
    return {"size": decode_size(preprocess) if _flag(data_cfg, "jpeg_draft") else None,
            "max_pixels": max_image_pixels(data_cfg)}


def _source_files(spec: Any, split: str | None = None) -> str:
    """The paths a source spec names for `split` (None: for every split), for messages."""
    spec = plain(spec)
    part = spec[split] if split and isinstance(spec.get(split), dict) else spec
    found = []
    for key, value in part.items():
        if isinstance(value, dict):
            found.append(_source_files(value))
        elif isinstance(value, str) and key != "name":
            found.append(value)
    return ", ".join(found)


def load_splits(data_cfg: Any, verify: tuple[str, ...] = ("train", "val"), captions: bool = True,
                also_check: tuple[str, ...] = ()) -> dict[str, list]:
    """Read `data_cfg.source` -> {split: [CaptionRecord or ClipRecord]}, checked now rather than mid-run.

    Every split: value types, ids, file names inside the image folder (`data.allow_outside_root`), and no input
    in two splits. The `verify` splits must be there and keep at least one usable record, and every input in
    them is opened per `data.verify_images` (none | header | full) and `data.on_bad_image`. `also_check`: splits
    the run reads later (the test split for train.evaluate_test / train.show_examples): when the source gives
    them, their inputs' headers are checked now too, so a missing file stops the run before the first step.
    With `captions`, empty and repeated captions are dropped per `data.on_bad_caption` (tasks that only need
    labels pass False). `data_cfg` is a DictConfig or a plain dict.
    """
    mode = data_cfg.get("verify_images", "full")
    if mode not in VERIFY_MODES:
        raise DataError(f"data.verify_images must be one of {', '.join(VERIFY_MODES)}, got {mode!r}")
    max_pixels = max_image_pixels(data_cfg)
    _flag(data_cfg, "jpeg_draft")
    splits = read_source(data_cfg["source"], allow_outside_root=_flag(data_cfg, "allow_outside_root"))
    what = _kind(splits)
    if what == "clips":
        _reject_image_options(data_cfg)
    for split in verify:
        if not splits.get(split):
            raise DataError(f"data: the source gives no '{split}' {what}")
    check_overlap(splits, f"data.source ({_source_files(data_cfg['source'])})")
    check = check_clip if what == "clips" else functools.partial(check_image, max_pixels=max_pixels)
    for split, records in splits.items():
        if captions:
            records = clean_captions(records, f"{split} captions", data_cfg.get("on_bad_caption", "error"))
        if mode != "none" and (split in verify or split in also_check):
            records = check_inputs(records, check, data_cfg.get("on_bad_image", "error"),
                                   full=mode == "full" and split in verify, what=what, desc=f"checking {split} {what}")
        splits[split] = records
    for split in verify:
        if not splits[split]:
            usable = f"{what} with usable captions" if captions else f"readable {what}"
            raise DataError(f"data: no '{split}' {usable} are left in {_source_files(data_cfg['source'], split)} "
                            "(see the warnings above for what was left out)")
    return splits


def make_loader(dataset: Dataset, sampler: Sampler, batch_size: int, data_cfg: Any, device: torch.device,
                collate_fn=collate) -> DataLoader:
    """A DataLoader with `data.num_workers` and `data.pin_memory` (auto: pin when training on CUDA)."""
    pin_memory = data_cfg.get("pin_memory", "auto")
    pin = device.type == "cuda" if pin_memory == "auto" else bool(pin_memory)
    # An explicit generator keeps DataLoader start-up from consuming the global RNG, so resumes are exact.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate_fn, pin_memory=pin,
                      num_workers=data_cfg.get("num_workers", 0), generator=torch.Generator())
