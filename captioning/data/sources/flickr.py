"""Flickr-style caption tables (CSV `image,caption` or `Flickr8k.token.txt`) with an optional split file."""
from __future__ import annotations

import csv
import io
from collections import defaultdict
from pathlib import Path

from captioning.data.records import SPLITS, CaptionRecord, DataError, first_items
from captioning.data.sources.registry import SOURCES
from captioning.data.sources.coco import read_json


def _read_caption_table(path: Path) -> dict[str, list[str]]:
    """CSV `image,caption` (Kaggle copy) or `Flickr8k.token.txt` lines `name#k<TAB>caption`."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    text = path.read_text(encoding="utf-8")
    captions: dict[str, list[str]] = defaultdict(list)
    first_line = text.split("\n", 1)[0].strip().lower()
    if first_line.replace(" ", "") == "image,caption":
        for row_number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
            if row_number == 1 or not row:
                continue
            if len(row) < 2:
                raise DataError(f"{path}: line {row_number} has no caption column")
            captions[row[0].strip()].append(",".join(row[1:]))
        return captions
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(f"{path}: line {line_number} is neither 'image,caption' CSV nor 'name#k<TAB>caption'")
        key, caption = line.split("\t", 1)
        captions[key.split("#", 1)[0].strip()].append(caption)
    return captions


def _default_split(names: list[str]) -> dict[str, str]:
    """Without a split file: sorted by name, index % 10 == 0 is test, == 1 is val, the rest train."""
    return {name: {0: "test", 1: "val"}.get(index % 10, "train") for index, name in enumerate(sorted(names))}


@SOURCES.register("flickr")
def flickr_splits(captions_file: str | Path, image_dir: str | Path, split_file: str | Path | None = None) -> dict[str, list[CaptionRecord]]:
    """Flickr-style captions with an optional split file `{file name: train|val|test}`."""
    captions = _read_caption_table(Path(captions_file))
    if split_file:
        assignment = read_json(split_file)
        if not isinstance(assignment, dict):
            raise DataError(f"{split_file}: expected a JSON object {{file name: split}}")
        unknown = sorted(set(assignment) - set(captions))
        if unknown:
            raise DataError(f"{split_file}: names images without captions in {captions_file}: {first_items(unknown)}")
        bad = sorted({split for split in assignment.values() if split not in SPLITS})
        if bad:
            raise DataError(f"{split_file}: unknown split name(s) {bad}; expected {list(SPLITS)}")
    else:
        assignment = _default_split(list(captions))
    root = Path(image_dir)
    splits: dict[str, list[CaptionRecord]] = defaultdict(list)
    for name in sorted(assignment):
        split = assignment[name]
        splits[split].append(CaptionRecord(name, root / name, split, captions[name]))
    return dict(splits)
