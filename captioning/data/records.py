"""The one record form every caption source is read into, and the checks run on records before training."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

from tqdm import tqdm

from captioning.errors import DataError  # a core error (the vocabulary raises it too); data modules import it here
from captioning.vocab import tokenize

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")

Record = TypeVar("Record")  # a CaptionRecord or a ClipRecord: anything with `image_path`


@dataclass
class CaptionRecord:
    image_id: int | str
    image_path: Path
    split: str
    captions: list[str] = field(default_factory=list)


def first_items(items: list, n: int = 5) -> str:
    """The first `n` items for an error message, and how many there are in all when that is more."""
    shown = ", ".join(str(item) for item in items[:n])
    return shown + (f" ... ({len(items)} in all)" if len(items) > n else "")


def clean_captions(records: list[Record], source: str, on_bad_caption: str = "error") -> list[Record]:
    """Drop empty captions (an error or skipped) and repeats of a caption of the same record (a duplicated row would
    count twice as a reference); records left with no caption are left out. A caption is empty when it has no word
    (`vocab.tokenize`): blank, or only punctuation, emoji or control characters, which would train an empty target."""
    if on_bad_caption not in ("error", "skip"):
        raise DataError(f"data.on_bad_caption must be 'error' or 'skip', got {on_bad_caption!r}")
    empty_ids, repeated_ids, repeats = [], [], 0
    for record in records:
        bad = [index for index, caption in enumerate(record.captions) if not isinstance(caption, str)]
        if bad:
            raise DataError(f"{source}: caption {bad[0]} of image id {record.image_id!r} is not a string "
                            f"({type(record.captions[bad[0]]).__name__})")
        kept = [caption.strip() for caption in record.captions if tokenize(caption)]
        if len(kept) != len(record.captions):
            empty_ids.append(record.image_id)
        unique = list(dict.fromkeys(kept))
        if len(unique) != len(kept):
            repeated_ids.append(record.image_id)
            repeats += len(kept) - len(unique)
        record.captions = unique
    if repeated_ids:
        log.warning("%s: dropped %d repeated captions (the same caption twice for one image) of %d images (%s)",
                    source, repeats, len(repeated_ids), first_items(repeated_ids))
    if empty_ids and on_bad_caption == "error":
        raise DataError(
            f"{source}: empty captions (no words: blank, or only punctuation, emoji or control characters) for image "
            f"ids {first_items(empty_ids)} "
            "(set data.on_bad_caption=skip to drop them)"
        )
    if empty_ids:
        log.warning("%s: dropped empty captions of %d images (%s)", source, len(empty_ids), first_items(empty_ids))
    without = [record.image_id for record in records if not record.captions]
    if without:
        log.warning("%s: %d images have no captions and are left out (%s)", source, len(without), first_items(without))
    return [record for record in records if record.captions]


def check_inputs(records: list[Record], check: Callable[[Path, bool], str | None], on_bad_image: str = "error",
                 full: bool = True, what: str = "images", desc: str | None = None) -> list[Record]:
    """Open every record's input up front, so a bad file stops the run now, not hours into an epoch.

    `check(path, full)` returns a message for an unreadable input (`images.check_image`, `clips.check_clip`);
    `on_bad_image` (the `data.on_bad_image` policy) either stops naming them or leaves them out.
    """
    if on_bad_image not in ("error", "skip"):
        raise DataError(f"data.on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
    kept, bad = [], []
    for record in tqdm(records, desc=desc or f"checking {what}", leave=False, disable=len(records) < 200):
        problem = check(record.image_path, full)
        if problem is None:
            kept.append(record)
        else:
            bad.append(problem)
    if bad and on_bad_image == "error":
        raise DataError(f"{len(bad)} unreadable {what}: " + "; ".join(bad[:5]) +
                        " (set data.on_bad_image=skip to leave them out)")
    if bad:
        log.warning("skipped %d unreadable %s, e.g. %s", len(bad), what, bad[0])
    return kept


def check_overlap(splits: dict[str, list[Record]], source: str) -> None:
    """One input file in two splits (train/test leakage), or twice in one split under two ids, is an error. Files are
    compared as files, not as paths: through symbolic links (real paths) and hard links (device and inode)."""
    seen: dict[object, tuple[str, int | str, str]] = {}
    for split, records in splits.items():
        for record in records:
            keys = [os.path.realpath(record.image_path)]
            try:
                status = os.stat(record.image_path)
                keys.append((status.st_dev, status.st_ino))
            except OSError:
                pass  # a missing file is reported by the image check; its path still counts
            first = next((seen[key] for key in keys if key in seen), None)
            if first is not None and first[:2] != (split, record.image_id):
                first_split, first_id, first_path = first
                where = f"both '{first_split}' and '{split}'" if first_split != split else f"'{split}' twice"
                same = "" if os.path.normpath(os.path.abspath(first_path)) == os.path.normpath(
                    os.path.abspath(record.image_path)) else f" (the same file as {first_path})"
                raise DataError(f"{source}: {record.image_path}{same} is in {where} (ids {first_id!r} and "
                                f"{record.image_id!r}); an image must be in one split only")
            for key in keys:
                seen.setdefault(key, (split, record.image_id, record.image_path))


def split_records(records: list[CaptionRecord]) -> dict[str, list[CaptionRecord]]:
    by_split: dict[str, list[CaptionRecord]] = {split: [] for split in SPLITS}
    for record in records:
        by_split.setdefault(record.split, []).append(record)
    return by_split


# The most a file this project writes for itself may hold when read back: a feature store's header.json and index.json,
# an export's captioner.json, an evaluation's metrics.json. Ours are kilobytes to a few megabytes (index.json of
# COCO's 123k images: about 8 MB); a bigger one is not ours, and is refused before it is read into memory.
MAX_RECORD_BYTES = 256 * 2**20


def record_size_error(path: str | Path, limit: int = MAX_RECORD_BYTES) -> str | None:
    """Why the file at `path` is too big to be one of our records, or None."""
    try:
        size = Path(path).stat().st_size
    except OSError:
        return None  # the read that follows names what is wrong
    if size > limit:
        return f"{path}: {size:,} bytes, over the {limit:,} that a file this project writes for itself may hold"
    return None
