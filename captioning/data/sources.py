"""Caption sources (COCO, Karpathy split files, Flickr tables) read into `CaptionRecord`s.

Each `*_splits` function is a Hydra `_target_` of a `conf/data/*.yaml` and returns
`{split: [CaptionRecord, ...]}` for the splits it knows.
"""
from __future__ import annotations

import contextlib
import csv
import io
import json
from collections import defaultdict
from pathlib import Path

from captioning.data.records import SPLITS, CaptionRecord, DataError, _first


def read_json(path: str | Path) -> dict | list:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: malformed JSON ({error})") from error
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from error


def _require(mapping: dict, keys: tuple[str, ...], where: str) -> None:
    missing = [key for key in keys if key not in mapping]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}")


# ---------------------------------------------------------------- COCO


def read_coco(annotations: str | Path, images: str | Path, split: str) -> list[CaptionRecord]:
    """Read an official COCO caption file (`info/licenses/images/annotations`) through pycocotools."""
    from pycocotools.coco import COCO

    dataset = read_json(annotations)
    if not isinstance(dataset, dict):
        raise DataError(f"{annotations}: expected a JSON object with 'images' and 'annotations'")
    _require(dataset, ("images", "annotations"), str(annotations))
    for index, image in enumerate(dataset["images"]):
        _require(image, ("id", "file_name"), f"{annotations}: images[{index}]")
    known = {image["id"] for image in dataset["images"]}
    unknown = []
    for index, annotation in enumerate(dataset["annotations"]):
        _require(annotation, ("id", "image_id", "caption"), f"{annotations}: annotations[{index}]")  # pycocotools indexes by id
        if annotation["image_id"] not in known:
            unknown.append(annotation["image_id"])
    if unknown:
        raise DataError(f"{annotations}: captions reference unknown image ids {_first(sorted(set(unknown)))}")

    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress chatter
        coco.createIndex()
    image_dir = Path(images)
    records = []
    for image_id in sorted(coco.imgs):
        captions = [annotation["caption"] for annotation in coco.imgToAnns[image_id]]
        records.append(CaptionRecord(image_id, image_dir / coco.imgs[image_id]["file_name"], split, captions))
    return records


def coco_splits(train: dict | None = None, val: dict | None = None, test: dict | None = None) -> dict[str, list[CaptionRecord]]:
    """Each split given as `{annotations: captions_*.json, images: folder}`."""
    splits = {}
    for split, paths in (("train", train), ("val", val), ("test", test)):
        if paths:
            _require(paths, ("annotations", "images"), f"data.{split}")
            splits[split] = read_coco(paths["annotations"], paths["images"], split)
    return splits


# ---------------------------------------------------------------- Karpathy split files


def karpathy_splits(dataset_json: str | Path, image_root: str | Path, restval_as_train: bool = True) -> dict[str, list[CaptionRecord]]:
    """Read `dataset_{coco,flickr8k,flickr30k}.json` (`images[].{filepath, filename, split, sentences[].raw}`)."""
    dataset = read_json(dataset_json)
    if not isinstance(dataset, dict) or "images" not in dataset:
        raise DataError(f"{dataset_json}: expected a JSON object with an 'images' list")
    root = Path(image_root)
    splits: dict[str, list[CaptionRecord]] = defaultdict(list)
    for index, image in enumerate(dataset["images"]):
        _require(image, ("filename", "split", "sentences"), f"{dataset_json}: images[{index}]")
        split = image["split"]
        if split == "restval":
            split = "train" if restval_as_train else "restval"
        image_id = image.get("cocoid", image.get("imgid", image["filename"]))
        captions = [sentence.get("raw", " ".join(sentence.get("tokens", []))) for sentence in image["sentences"]]
        path = root / image.get("filepath", "") / image["filename"]
        splits[split].append(CaptionRecord(image_id, path, split, captions))
    return dict(splits)


# ---------------------------------------------------------------- Flickr caption tables


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


def flickr_splits(captions_file: str | Path, image_dir: str | Path, split_file: str | Path | None = None) -> dict[str, list[CaptionRecord]]:
    """Flickr-style captions with an optional split file `{file name: train|val|test}`."""
    captions = _read_caption_table(Path(captions_file))
    if split_file:
        assignment = read_json(split_file)
        if not isinstance(assignment, dict):
            raise DataError(f"{split_file}: expected a JSON object {{file name: split}}")
        unknown = sorted(set(assignment) - set(captions))
        if unknown:
            raise DataError(f"{split_file}: names images without captions in {captions_file}: {_first(unknown)}")
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
