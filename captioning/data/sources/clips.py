"""Clip sources: a folder of clips with activity labels (CSV `clip,label`) and/or captions (COCO-like JSON).

`clip_splits` is the source "clips" (`conf/data/clips.yaml`); each split is given as
`{clips: folder, labels: CSV or null, annotations: JSON or null}`. In the CSV, `clip` is the clip's
name inside the folder (a frame folder or a video file). The JSON has the COCO caption layout with
clips in place of images: `images: [{id, file_name}]`, `annotations: [{id, image_id, caption}]`, the
id being the clip id. With both files, they must name the same clips.
"""
from __future__ import annotations

import csv
import io
import os
from pathlib import Path

from captioning.data.clips import ClipRecord
from captioning.data.records import DataError, first_items
from captioning.data.sources.coco import read_coco
from captioning.data.sources.files import file_in, read_text
from captioning.data.sources.registry import SOURCES, read_splits


def read_labels(path: str | Path) -> dict[str, str]:
    """CSV with the header `clip,label` -> {clip name: label}; blank or conflicting labels are errors."""
    path = Path(path)
    try:
        rows = list(csv.reader(io.StringIO(read_text(path))))
    except csv.Error as error:
        raise DataError(f"{path}: not a readable CSV table ({error})") from error
    if not rows or [cell.strip().lower() for cell in rows[0][:2]] != ["clip", "label"]:
        found = ",".join(rows[0]) if rows else "an empty file"
        raise DataError(f"{path}: expected the header 'clip,label', found {found!r}")
    labels: dict[str, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not any(cell.strip() for cell in row):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise DataError(f"{path}: line {line} needs a clip name and a label, got {','.join(row)!r}")
        clip, label = row[0].strip(), row[1].strip()
        if labels.get(clip, label) != label:
            raise DataError(f"{path}: clip {clip!r} has two labels, {labels[clip]!r} and {label!r} (line {line})")
        labels[clip] = label
    if not labels:
        raise DataError(f"{path}: no labelled clips")
    return labels


def read_split(split: str, clips: str | Path, labels: str | Path | None = None,
               annotations: str | Path | None = None, allow_outside_root: bool = False) -> list[ClipRecord]:
    """One split's clips, labelled from the CSV and/or captioned from the JSON."""
    folder = Path(clips)
    if labels is None and annotations is None:
        raise DataError(f"data.{split}: give `labels` (CSV clip,label), `annotations` (captions JSON), or both")
    label_of = read_labels(labels) if labels is not None else None
    if annotations is None:
        return [ClipRecord(name, file_in(folder, name, f"{labels}: clip {name!r}", allow_outside_root), split, label=label)
                for name, label in sorted(label_of.items())]
    records = [ClipRecord(r.image_id, r.image_path, split, captions=r.captions)
               for r in read_coco(annotations, folder, split, allow_outside_root)]
    if label_of is not None:  # the two files name a clip by its path under the folder
        names = {os.path.relpath(record.path, folder).replace(os.sep, "/"): record for record in records}
        label_of = {os.path.relpath(folder / name, folder).replace(os.sep, "/"): label for name, label in label_of.items()}
        unlabelled, uncaptioned = sorted(set(names) - set(label_of)), sorted(set(label_of) - set(names))
        if unlabelled or uncaptioned:
            raise DataError(f"data.{split}: {labels} and {annotations} name different clips: "
                            f"{len(unlabelled)} without a label ({first_items(unlabelled)}), "
                            f"{len(uncaptioned)} without captions ({first_items(uncaptioned)})")
        for name, record in names.items():
            record.label = label_of[name]
    return records


@SOURCES.register("clips")
def clip_splits(train: dict | None = None, val: dict | None = None, test: dict | None = None, *,
                allow_outside_root: bool = False) -> dict[str, list[ClipRecord]]:
    """Each split given as `{clips, labels, annotations}` (see the module docstring)."""
    return read_splits({"train": train, "val": val, "test": test}, ("clips",),
                       lambda split, files: read_split(split, files["clips"], files.get("labels"),
                                                       files.get("annotations"), allow_outside_root))


def check_labels(splits: dict[str, list[ClipRecord]], classes: list[str] | None = None) -> list[str]:
    """The classes (given, or the sorted train labels); clips without a label, or with an unknown one, are errors."""
    for split, records in splits.items():
        missing = [record.clip_id for record in records if record.label is None]
        if missing:
            raise DataError(f"data: {len(missing)} {split} clips have no activity label ({first_items(missing)}); "
                            "give the split a `labels` CSV")
    classes = list(classes) if classes is not None else sorted({record.label for record in splits["train"]})
    for split, records in splits.items():
        unknown = sorted({record.label for record in records} - set(classes))
        if unknown:
            raise DataError(f"data: {split} labels that are not classes of this model (the train labels): {first_items(unknown)}")
    return classes
