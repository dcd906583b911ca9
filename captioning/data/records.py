"""The one record form every caption source is read into, and its validation."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from captioning.data.images import check_image

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


class DataError(ValueError):
    """Caption data that cannot be used: the message names the file, key or id."""


@dataclass
class CaptionRecord:
    image_id: int | str
    image_path: Path
    split: str
    captions: list[str] = field(default_factory=list)


def _first(items: list, n: int = 5) -> str:
    shown = ", ".join(str(item) for item in items[:n])
    return shown + (f" ... ({len(items)} in all)" if len(items) > n else "")


def clean_captions(records: list[CaptionRecord], source: str, on_bad_caption: str = "error") -> list[CaptionRecord]:
    """Drop empty or whitespace-only captions; records left with none are an error or skipped."""
    empty_ids = []
    for record in records:
        kept = [caption.strip() for caption in record.captions if caption and caption.strip()]
        if len(kept) != len(record.captions):
            empty_ids.append(record.image_id)
        record.captions = kept
    if empty_ids and on_bad_caption == "error":
        raise DataError(
            f"{source}: empty or whitespace-only captions for image ids {_first(empty_ids)} "
            "(set data.on_bad_caption=skip to drop them)"
        )
    if empty_ids:
        log.warning("%s: dropped empty captions of %d images (%s)", source, len(empty_ids), _first(empty_ids))
    without = [record.image_id for record in records if not record.captions]
    if without:
        log.warning("%s: %d images have no captions and are left out (%s)", source, len(without), _first(without))
    return [record for record in records if record.captions]


def check_images(records: list[CaptionRecord], on_bad_image: str = "error", full: bool = True,
                 desc: str = "checking images") -> list[CaptionRecord]:
    """Open every image up front so a bad file stops the run now, not hours into an epoch."""
    if on_bad_image not in ("error", "skip"):
        raise DataError(f"data.on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    bad = []
    kept = []
    for record in tqdm(records, desc=desc, leave=False, disable=len(records) < 500):
        problem = check_image(record.image_path, full=full)
        if problem is None:
            kept.append(record)
        else:
            bad.append(problem)
    if bad and on_bad_image == "error":
        raise DataError(f"{len(bad)} unreadable images: " + "; ".join(bad[:5]) +
                        " (set data.on_bad_image=skip to leave them out)")
    if bad:
        log.warning("skipped %d unreadable images, e.g. %s", len(bad), bad[0])
    return kept


def split_records(records: list[CaptionRecord]) -> dict[str, list[CaptionRecord]]:
    by_split: dict[str, list[CaptionRecord]] = {split: [] for split in SPLITS}
    for record in records:
        by_split.setdefault(record.split, []).append(record)
    return by_split
