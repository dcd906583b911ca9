"""Karpathy split files: `dataset_coco.json`, `dataset_flickr8k.json`, `dataset_flickr30k.json`."""
from __future__ import annotations

import os
from collections import defaultdict
from pathlib import Path

from captioning.data.records import CaptionRecord, DataError
from captioning.data.sources.files import describe, entry, file_in, list_of, read_json, record_id, text
from captioning.data.sources.registry import SOURCES

KARPATHY_SPLITS = ("train", "val", "test", "restval")  # a typo such as 'tset' must not drop images silently


def _captions(sentences: object, where: str) -> list[str]:
    """`sentences[].raw` (or, without `raw`, the words of `tokens`)."""
    captions = []
    for k, sentence in enumerate(list_of(sentences, f"{where}.sentences")):
        place = f"{where}.sentences[{k}]"
        if not isinstance(sentence, dict):
            raise DataError(f"{place}: expected an object with 'raw', found {describe(sentence)}")
        if "raw" in sentence:
            captions.append(text(sentence["raw"], f"{place}.raw"))
        elif isinstance(sentence.get("tokens"), list) and all(isinstance(word, str) for word in sentence["tokens"]):
            captions.append(" ".join(sentence["tokens"]))
        else:
            raise DataError(f"{place}: has no 'raw' caption (nor a 'tokens' list of words)")
    return captions


@SOURCES.register("karpathy")
def karpathy_splits(dataset_json: str | Path, image_root: str | Path, restval_as_train: bool = True, *,
                    allow_outside_root: bool = False) -> dict[str, list[CaptionRecord]]:
    """Read `dataset_{coco,flickr8k,flickr30k}.json` (`images[].{filepath, filename, split, sentences[].raw}`)."""
    dataset = read_json(dataset_json)
    if not isinstance(dataset, dict) or "images" not in dataset:
        raise DataError(f"{dataset_json}: expected a JSON object with an 'images' list")
    root = Path(image_root)
    splits: dict[str, list[CaptionRecord]] = defaultdict(list)
    first_of: dict[int | str, int] = {}
    for index, image in enumerate(list_of(dataset["images"], f"{dataset_json}: images")):
        entry(image, ("filename", "split", "sentences"), f"{dataset_json}: images[{index}]")
        id_key = next((key for key in ("cocoid", "imgid") if key in image), "filename")
        image_id = record_id(image[id_key], f"{dataset_json}: images[{index}].{id_key}")
        where = f"{dataset_json}: images[{index}] (id {image_id!r})"
        if image_id in first_of:
            raise DataError(f"{where}: the id is also that of images[{first_of[image_id]}]")
        first_of[image_id] = index
        split = image["split"]
        if split not in KARPATHY_SPLITS:  # (a list or null is not a split name either)
            raise DataError(f"{where}: unknown split {describe(split)}; expected one of {', '.join(KARPATHY_SPLITS)}")
        if split == "restval":
            split = "train" if restval_as_train else "restval"
        folder, name = text(image.get("filepath", ""), f"{where}.filepath"), text(image["filename"], f"{where}.filename")
        if not name.strip():
            raise DataError(f"{where}.filename: an empty file name")
        file_in(root, os.path.join(folder, name), f"{where}.filepath/filename", allow_outside_root)
        path = root / folder / name
        splits[split].append(CaptionRecord(image_id, path, split, _captions(image["sentences"], where)))
    return dict(splits)
