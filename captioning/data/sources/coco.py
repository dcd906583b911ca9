"""Official COCO caption files (`info/licenses/images/annotations`); also the captions JSON of clip sources."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from captioning.data.records import CaptionRecord, DataError, first_items
from captioning.data.sources.files import entry, file_in, list_of, read_json, record_id, sort_ids, text
from captioning.data.sources.registry import SOURCES, read_splits, require_keys

__all__ = ["coco_splits", "read_coco", "read_json"]  # read_json: every source's JSON reading, kept importable here


def _image_files(dataset: dict, annotations: str | Path, root: Path, allow_outside_root: bool) -> dict:
    """{image id: path}: ids and files one to one (the same entry twice is harmless, one id with two files is not)."""
    paths: dict[int | str, tuple[Path, int]] = {}
    owners: dict[Path, tuple[int | str, int]] = {}
    for index, image in enumerate(list_of(dataset["images"], f"{annotations}: images")):
        where = f"{annotations}: images[{index}]"
        entry(image, ("id", "file_name"), where)
        image_id = record_id(image["id"], f"{where}.id")
        path = file_in(root, image["file_name"], f"{where}.file_name (image id {image_id!r})", allow_outside_root)
        if image_id in paths and paths[image_id][0] != path:
            raise DataError(f"{annotations}: image id {image_id!r} has two files, {paths[image_id][0].name!r} "
                            f"(images[{paths[image_id][1]}]) and {path.name!r} (images[{index}])")
        if path in owners and owners[path][0] != image_id:
            raise DataError(f"{annotations}: file {image['file_name']!r} has two image ids, {owners[path][0]!r} "
                            f"(images[{owners[path][1]}]) and {image_id!r} (images[{index}])")
        paths.setdefault(image_id, (path, index))
        owners.setdefault(path, (image_id, index))
    return {image_id: path for image_id, (path, _) in paths.items()}


def read_coco(annotations: str | Path, images: str | Path, split: str,
              allow_outside_root: bool = False) -> list[CaptionRecord]:
    """Read a COCO caption file: records in image-id order, each image's captions in file order (as pycocotools
    indexes them). Wrong value types, ids that clash and file names outside `images` are DataErrors naming the
    file and the index or id."""
    dataset = read_json(annotations)
    if not isinstance(dataset, dict):
        raise DataError(f"{annotations}: expected a JSON object with 'images' and 'annotations'")
    require_keys(dataset, ("images", "annotations"), str(annotations))
    files = _image_files(dataset, annotations, Path(images), allow_outside_root)
    captions: dict[int | str, list[str]] = defaultdict(list)
    unknown = []
    for index, annotation in enumerate(list_of(dataset["annotations"], f"{annotations}: annotations")):
        where = f"{annotations}: annotations[{index}]"
        entry(annotation, ("id", "image_id", "caption"), where)
        record_id(annotation["id"], f"{where}.id")
        image_id = record_id(annotation["image_id"], f"{where}.image_id")
        caption = text(annotation["caption"], f"{where}.caption (image id {image_id!r})")
        if image_id in files:
            captions[image_id].append(caption)
        else:
            unknown.append(image_id)
    if unknown:
        raise DataError(f"{annotations}: captions reference unknown image ids "
                        f"{first_items(sort_ids(list(set(unknown)), str(annotations)))}")
    return [CaptionRecord(image_id, files[image_id], split, captions[image_id])
            for image_id in sort_ids(list(files), f"{annotations}: images")]


@SOURCES.register("coco")
def coco_splits(train: dict | None = None, val: dict | None = None, test: dict | None = None, *,
                allow_outside_root: bool = False) -> dict[str, list[CaptionRecord]]:
    """Each split given as `{annotations: captions_*.json, images: folder}`."""
    return read_splits({"train": train, "val": val, "test": test}, ("annotations", "images"),
                       lambda split, files: read_coco(files["annotations"], files["images"], split, allow_outside_root))
