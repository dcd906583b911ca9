"""Flickr-style caption tables (CSV `image,caption` or `Flickr8k.token.txt`) with an optional split file, or one of
five cross-validation folds (`fold_split`)."""
from __future__ import annotations

import csv
import io
import logging
from collections import defaultdict
from pathlib import Path

from captioning.data.records import SPLITS, CaptionRecord, DataError, first_items
from captioning.data.sources.files import describe, file_in, read_json, read_text
from captioning.data.sources.registry import SOURCES

log = logging.getLogger(__name__)

FOLDS = 5


def _csv_rows(path: Path, text: str) -> list[tuple[int, str, str]]:
    """(row number, image, caption) of a CSV `image,caption` table; commas inside captions are kept."""
    rows = []
    try:
        for row_number, row in enumerate(csv.reader(io.StringIO(text)), start=1):
            if row_number == 1 or not row:
                continue
            if len(row) < 2:
                raise DataError(f"{path}: line {row_number} has no caption column")
            rows.append((row_number, row[0], ",".join(row[1:])))
    except csv.Error as error:
        raise DataError(f"{path}: not a readable CSV table ({error})") from error
    return rows


def _token_rows(path: Path, text: str) -> list[tuple[int, str, str]]:
    """(line number, image, caption) of `Flickr8k.token.txt` lines `name#k<TAB>caption`."""
    rows = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if "\t" not in line:
            raise DataError(f"{path}: line {line_number} is neither 'image,caption' CSV nor 'name#k<TAB>caption'")
        key, caption = line.split("\t", 1)
        rows.append((line_number, key.split("#", 1)[0], caption))
    return rows


def _read_caption_table(path: Path) -> dict[str, list[str]]:
    """CSV `image,caption` (Kaggle copy) or `Flickr8k.token.txt` lines `name#k<TAB>caption` -> {image: captions}."""
    text = read_text(path)
    first_line = text.split("\n", 1)[0].strip().lower()
    is_csv = first_line.replace(" ", "") == "image,caption"
    captions: dict[str, list[str]] = defaultdict(list)
    for line, name, caption in (_csv_rows if is_csv else _token_rows)(path, text):
        if not name.strip():
            raise DataError(f"{path}: line {line} has no image name")
        captions[name.strip()].append(caption)
    return captions


def _read_split_file(split_file: str | Path, captions_file: str | Path, captions: dict) -> dict[str, str]:
    assignment = read_json(split_file)
    if not isinstance(assignment, dict):
        raise DataError(f"{split_file}: expected a JSON object {{file name: split}}")
    unknown = sorted(set(assignment) - set(captions))
    if unknown:
        raise DataError(f"{split_file}: names images without captions in {captions_file}: {first_items(unknown)}")
    bad = sorted({describe(split) for split in assignment.values() if split not in SPLITS})
    if bad:
        raise DataError(f"{split_file}: unknown split name(s) {', '.join(bad)}; expected {list(SPLITS)}")
    left_out = sorted(set(captions) - set(assignment))
    if left_out:
        log.warning("%s: %d images of %s have no split and are left out (%s)", split_file, len(left_out),
                    captions_file, first_items(left_out))
    return assignment


def _default_split(names: list[str]) -> dict[str, str]:
    """Without a split file: sorted by name, index % 10 == 0 is test, == 1 is val, the rest train."""
    return {name: {0: "test", 1: "val"}.get(index % 10, "train") for index, name in enumerate(sorted(names))}


def fold_split(names: list[str], fold: int) -> dict[str, str]:
    """Fold `fold` of five: sorted by name, index % 5 == fold is test, index % 10 == (fold + 1) % 5 is val (every
    tenth name, never a test one), the rest train. The five test sets are disjoint and cover every image: 200 / 100 /
    700 of the 1,000-image sample, near-equal fifths (and tenths for val) of any other count."""
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < FOLDS:
        raise DataError(f"data.fold={fold!r}: expected an integer in 0..{FOLDS - 1}")
    val = (fold + 1) % FOLDS
    return {name: "test" if index % FOLDS == fold else "val" if index % (2 * FOLDS) == val else "train"
            for index, name in enumerate(sorted(names))}


@SOURCES.register("flickr")
def flickr_splits(captions_file: str | Path, image_dir: str | Path, split_file: str | Path | None = None,
                  fold: int | None = None, *, allow_outside_root: bool = False) -> dict[str, list[CaptionRecord]]:
    """Flickr-style captions with an optional split file `{file name: train|val|test}`, or the splits of one of five
    folds (`fold_split`; not both)."""
    if fold is not None and split_file:
        raise DataError(f"data.fold={fold!r}: the fold chooses the splits; expected no data.split_file "
                        f"(it is {split_file})")
    captions = _read_caption_table(Path(captions_file))
    if fold is not None:
        assignment = fold_split(list(captions), fold)
    elif split_file:
        assignment = _read_split_file(split_file, captions_file, captions)
    else:
        assignment = _default_split(list(captions))
    root = Path(image_dir)
    splits: dict[str, list[CaptionRecord]] = defaultdict(list)
    for name in sorted(assignment):
        split = assignment[name]
        path = file_in(root, name, f"{captions_file}: image {name!r}", allow_outside_root)
        splits[split].append(CaptionRecord(name, path, split, captions[name]))
    return dict(splits)
