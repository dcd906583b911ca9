"""Train/test leakage through links: an image reached from two splits by a symbolically linked folder or a hard link
is one file in two splits, and is refused like the same path twice (`captioning.data.records.check_overlap`), naming
both paths; no file changes. Every case builds its own files in tmp_path, with the helpers of test_data."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from captioning.data.loading import load_splits
from tests.hostile.test_data import (
    coco,
    coco_config,
    flickr_config,
    flickr_table,
    handled,
    karpathy_config,
    refused,
    write_image,
    write_json,
)


def linked(tmp_path: Path, how: str) -> tuple[Path, str]:
    """A second way to reach images/2.png: (the folder to read from, the file name there)."""
    if how == "symlinked_folder":
        (tmp_path / "linked").symlink_to(tmp_path / "images", target_is_directory=True)
        return tmp_path / "linked", "2.png"
    (tmp_path / "other").mkdir()
    os.link(tmp_path / "images" / "2.png", tmp_path / "other" / "7.png")
    return tmp_path / "other", "7.png"


LINKS = ["symlinked_folder", "hard_link"]


@pytest.mark.parametrize("how", LINKS)
def test_coco_image_reached_from_test_through_a_link(tmp_path, how):
    data = coco_config(tmp_path)
    folder, name = linked(tmp_path, how)
    test = write_json(tmp_path / "test.json", {"images": [{"id": 7, "file_name": name}],
                                               "annotations": [{"id": 1, "image_id": 7, "caption": "a picture"}]})
    data["source"]["test"] = {"annotations": str(test), "images": str(folder)}
    refused(tmp_path, lambda: load_splits(data), f"{folder / name} (the same file as {tmp_path / 'images' / '2.png'})",
            "in both 'train' and 'test' (ids 2 and 7)")


@pytest.mark.parametrize("how", LINKS)
def test_karpathy_image_in_val_through_a_link(tmp_path, how):
    def mutate(dataset):
        folder, name = linked(tmp_path, how)
        dataset["images"].append({"filepath": folder.name, "filename": name, "imgid": 7, "split": "val",
                                  "sentences": [{"raw": "a picture", "tokens": ["a", "picture"]}]})
        return dataset

    data = karpathy_config(tmp_path, mutate)
    refused(tmp_path, lambda: load_splits(data), "(the same file as", str(tmp_path / "images" / "2.png"),
            "in both 'train' and 'val' (ids 2 and 7)")


@pytest.mark.parametrize("how", LINKS)
def test_flickr_image_in_val_through_a_link(tmp_path, how):
    """Flickr reads one image folder: the second name lives inside it (a linked subfolder, or a hard link)."""
    data = flickr_config(tmp_path, flickr_table())
    images = tmp_path / "images"
    if how == "symlinked_folder":
        (images / "again").symlink_to(images, target_is_directory=True)
        name = "again/2.png"
    else:
        os.link(images / "2.png", images / "7.png")
        name = "7.png"
    (tmp_path / "captions.txt").write_text(flickr_table(f"{name},a picture again\n"))
    split = {f"{i}.png": "train" if i <= 4 else "val" for i in range(1, 7)}
    write_json(tmp_path / "split.json", {**split, name: "val"})
    refused(tmp_path, lambda: load_splits(data), f"{images / name} (the same file as {images / '2.png'})",
            "in both 'train' and 'val'")


def test_distinct_files_and_the_same_path_twice_are_unchanged(tmp_path):
    """Copies (not links) are distinct images; a link to a file no split names is harmless; one path in two splits
    is still named as before, without the 'same file' note."""
    data = coco_config(tmp_path)
    write_image(tmp_path / "copies" / "7.png", seed=2)
    (tmp_path / "linked").symlink_to(tmp_path / "images", target_is_directory=True)
    test = write_json(tmp_path / "test.json", {"images": [{"id": 7, "file_name": "7.png"}],
                                               "annotations": [{"id": 1, "image_id": 7, "caption": "a picture"}]})
    data["source"]["test"] = {"annotations": str(test), "images": str(tmp_path / "copies")}
    assert [r.image_id for r in handled(tmp_path, lambda: load_splits(data))["test"]] == [7]
    write_json(tmp_path / "test.json", {**coco([2]), "images": [{"id": 7, "file_name": "2.png"}],
                                        "annotations": [{"id": 1, "image_id": 7, "caption": "a picture"}]})
    data["source"]["test"]["images"] = data["source"]["train"]["images"]
    message = refused(tmp_path, lambda: load_splits(data), "2.png is in both 'train' and 'test' (ids 2 and 7)")
    assert "the same file as" not in message
