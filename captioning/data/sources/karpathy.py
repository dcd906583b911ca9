"""Karpathy split files: `dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from captioning.data.records import CaptionRecord, DataError
from captioning.data.sources.registry import SOURCES
from captioning.data.sources.coco import read_json
from captioning.data.sources.registry import require_keys


@SOURCES.register("karpathy")
def karpathy_splits(dataset_json: str | Path, image_root: str | Path, restval_as_train: bool = True) -> dict[str, list[CaptionRecord]]:
    """Read `dataset_{coco,flickr8k,flickr30k}.json` (`images[].{filepath, filename, split, sentences[].raw}`)."""
    dataset = read_json(dataset_json)
    if not isinstance(dataset, dict) or "images" not in dataset:
        raise DataError(f"{dataset_json}: expected a JSON object with an 'images' list")
    root = Path(image_root)
    splits: dict[str, list[CaptionRecord]] = defaultdict(list)
    for index, image in enumerate(dataset["images"]):
        require_keys(image, ("filename", "split", "sentences"), f"{dataset_json}: images[{index}]")
        split = image["split"]
        if split == "restval":
            split = "train" if restval_as_train else "restval"
        image_id = image.get("cocoid", image.get("imgid", image["filename"]))
        captions = [sentence.get("raw", " ".join(sentence.get("tokens", []))) for sentence in image["sentences"]]
        path = root / image.get("filepath", "") / image["filename"]
        splits[split].append(CaptionRecord(image_id, path, split, captions))
    return dict(splits)
