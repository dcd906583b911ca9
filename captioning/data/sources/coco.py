"""Official COCO caption files (`info/licenses/images/annotations`), and the JSON reading every source shares."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

from captioning.data.records import CaptionRecord, DataError, first_items
from captioning.data.sources.registry import SOURCES, read_splits, require_keys


def read_json(path: str | Path) -> dict | list:
    """A JSON file's content; a missing, malformed or non-UTF-8 file is a DataError naming it."""
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


def read_coco(annotations: str | Path, images: str | Path, split: str) -> list[CaptionRecord]:
    """Read an official COCO caption file (`info/licenses/images/annotations`) through pycocotools."""
    from pycocotools.coco import COCO

    dataset = read_json(annotations)
    if not isinstance(dataset, dict):
        raise DataError(f"{annotations}: expected a JSON object with 'images' and 'annotations'")
    require_keys(dataset, ("images", "annotations"), str(annotations))
    for index, image in enumerate(dataset["images"]):
        require_keys(image, ("id", "file_name"), f"{annotations}: images[{index}]")
    known = {image["id"] for image in dataset["images"]}
    unknown = []
    for index, annotation in enumerate(dataset["annotations"]):
        require_keys(annotation, ("id", "image_id", "caption"), f"{annotations}: annotations[{index}]")  # pycocotools indexes by id
        if annotation["image_id"] not in known:
            unknown.append(annotation["image_id"])
    if unknown:
        raise DataError(f"{annotations}: captions reference unknown image ids {first_items(sorted(set(unknown)))}")

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


@SOURCES.register("coco")
def coco_splits(train: dict | None = None, val: dict | None = None, test: dict | None = None) -> dict[str, list[CaptionRecord]]:
    """Each split given as `{annotations: captions_*.json, images: folder}`."""
    return read_splits({"train": train, "val": val, "test": test}, ("annotations", "images"),
                       lambda split, files: read_coco(files["annotations"], files["images"], split))
