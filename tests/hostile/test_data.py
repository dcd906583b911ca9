"""Hostile data, read through the real load path (`load_splits`, and `captioning.tasks.train` for a few): a bad data
file or image stops the command with one line naming the file and the index or id, or is handled correctly (a BOM
read, a duplicate row dropped, a bad image skipped under data.on_bad_image=skip); no file the command did not create
changes. Every case builds its own files in tmp_path."""
from __future__ import annotations

import functools
import io
import json
import logging
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from captioning.data.datasets import ImageLoader
from captioning.data.images import MAX_IMAGE_PIXELS, ImageReadError, load_rgb
from captioning.data.loading import image_options, load_splits
from captioning.data.records import CaptionRecord
from captioning.data.transforms import build_transform
from captioning.vocab import Vocabulary, check_vocabulary
from tests.conftest import compose_train
from tests.hostile.probe import assert_refused, run_command, snapshot

TRAIN_IDS, VAL_IDS = (1, 2, 3, 4), (5, 6)


def write_image(path: Path, size=(12, 8), seed=0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def coco(ids) -> dict:
    return {"images": [{"id": i, "file_name": f"{i}.png"} for i in ids],
            "annotations": [{"id": 10 * i + k, "image_id": i, "caption": f"a picture number {i} take {k}"}
                            for i in ids for k in range(2)]}


def karpathy() -> dict:
    return {"images": [{"filepath": "images", "filename": f"{i}.png", "imgid": i, "split": "train" if i in TRAIN_IDS
                        else "val", "sentences": [{"raw": f"a picture number {i}", "tokens": ["a", "picture"]}]}
                       for i in TRAIN_IDS + VAL_IDS]}


def put(*path_and_value):
    """A mutation setting data[k1][k2]... = value (a value of `DELETE` removes the key)."""
    *keys, value = path_and_value

    def mutate(data):
        node = data
        for key in keys[:-1]:
            node = node[key]
        if value is DELETE:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
        return data
    return mutate


DELETE = object()


def raw(content: bytes):
    """A mutation replacing the whole file with these bytes."""
    return lambda data: content


def write_json(path: Path, data) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return path


def images_for(tmp_path: Path, ids=TRAIN_IDS + VAL_IDS) -> Path:
    for i in ids:
        write_image(tmp_path / "images" / f"{i}.png", seed=i)
    return tmp_path / "images"


def coco_config(tmp_path: Path, mutate=lambda d: d, **options) -> dict:
    folder = images_for(tmp_path)
    train = write_json(tmp_path / "train.json", mutate(coco(TRAIN_IDS)))
    val = write_json(tmp_path / "val.json", coco(VAL_IDS))
    return {"source": {"name": "coco", "train": {"annotations": str(train), "images": str(folder)},
                       "val": {"annotations": str(val), "images": str(folder)}}, **options}


def karpathy_config(tmp_path: Path, mutate=lambda d: d, **options) -> dict:
    images_for(tmp_path)
    path = write_json(tmp_path / "dataset.json", mutate(karpathy()))
    return {"source": {"name": "karpathy", "dataset_json": str(path), "image_root": str(tmp_path)}, **options}


def flickr_config(tmp_path: Path, table: str | bytes, split: dict | bytes | None = None, **options) -> dict:
    """Images 1..6.png, the caption table, and a split file (None: 1-4 train, 5-6 val; "none": no split file)."""
    names = [f"{i}.png" for i in TRAIN_IDS + VAL_IDS]
    for i, name in enumerate(names):
        write_image(tmp_path / "images" / name, seed=i)
    (tmp_path / "captions.txt").write_bytes(table if isinstance(table, bytes) else table.encode())
    split = split if split is not None else {name: "val" if i >= len(TRAIN_IDS) else "train" for i, name in enumerate(names)}
    if split != "none":
        write_json(tmp_path / "split.json", split)
    return {"source": {"name": "flickr", "captions_file": str(tmp_path / "captions.txt"), "image_dir": str(tmp_path / "images"),
                       "split_file": None if split == "none" else str(tmp_path / "split.json")}, **options}


def flickr_table(extra: str = "") -> str:
    return "image,caption\n" + "".join(f"{i}.png,a picture number {i}\n" for i in TRAIN_IDS + VAL_IDS) + extra


def refused(tmp_path: Path, work, *culprits: str) -> str:
    """Run `work` as a script would: exit status 1, one line naming every culprit, no existing file changed."""
    before = snapshot(tmp_path)
    outcome = run_command(work)
    assert_refused(outcome, culprits[0], before, snapshot(tmp_path))
    for culprit in culprits[1:]:
        assert culprit in outcome.message, (culprit, outcome.message)
    return outcome.message


def handled(tmp_path: Path, work):
    """Run `work`: it must succeed without touching an existing file; returns what it returned."""
    before = snapshot(tmp_path)
    outcome = run_command(work)
    assert outcome.code == 0, outcome.message
    assert {k: v for k, v in snapshot(tmp_path).items() if k in before} == before
    return outcome.value


# ---------------------------------------------------------------- COCO caption files: types, ids, paths

COCO_CASES = {  # case: (mutation of the train file, what the message must name besides the file)
    "caption_is_a_number": (put("annotations", 1, "caption", 5), "annotations[1].caption"),
    "caption_is_a_list": (put("annotations", 2, "caption", ["a", "cat"]), "annotations[2].caption"),
    "caption_is_null": (put("annotations", 0, "caption", None), "annotations[0].caption"),
    "caption_missing": (put("annotations", 3, "caption", DELETE), "annotations[3]: missing key(s) ['caption']"),
    "image_entry_not_an_object": (put("images", 1, "2.png"), "images[1]"),
    "image_id_is_a_list": (put("images", 0, "id", [1]), "images[0].id"),
    "image_id_is_null": (put("images", 2, "id", None), "images[2].id"),
    "image_id_is_a_fraction": (put("images", 1, "id", 1.5), "images[1].id"),
    "image_id_is_true": (put("images", 1, "id", True), "images[1].id"),
    "image_id_is_empty_text": (put("images", 1, "id", " "), "images[1].id"),
    "file_name_is_null": (put("images", 0, "file_name", None), "images[0].file_name"),
    "file_name_is_a_number": (put("images", 3, "file_name", 4), "images[3].file_name"),
    "file_name_is_empty": (put("images", 3, "file_name", ""), "images[3].file_name"),
    "file_name_escapes_root": (put("images", 0, "file_name", "../secret.png"), "outside the image folder"),
    "file_name_is_absolute": (put("images", 0, "file_name", "/etc/hostname"), "'/etc/hostname' is outside"),
    "file_name_escapes_deeper": (put("images", 0, "file_name", "a/../../x.png"), "images[0].file_name"),
    "annotation_image_id_is_a_list": (put("annotations", 0, "image_id", [1]), "annotations[0].image_id"),
    "annotation_id_is_null": (put("annotations", 0, "id", None), "annotations[0].id"),
    "annotation_not_an_object": (put("annotations", 4, "a caption"), "annotations[4]"),
    "images_not_a_list": (put("images", {"1": "1.png"}), "images: expected a list"),
    "annotations_not_a_list": (put("annotations", "none"), "annotations: expected a list"),
    "top_level_is_a_list": (raw(b"[1, 2]"), "expected a JSON object"),
    "duplicate_id_other_file": (put("images", 1, "id", 1), "image id 1 has two files"),
    "one_file_two_ids": (put("images", 1, "file_name", "1.png"), "has two image ids"),
    "ids_mix_numbers_and_text": (lambda d: put("annotations", 3, "image_id", "two")(put("annotations", 2, "image_id", "two")(
        put("images", 1, "id", "two")(d))), "ids mix numbers and strings (e.g. 1 and 'two')"),
    "caption_for_unknown_image": (put("annotations", 0, "image_id", 99), "unknown image ids 99"),
    "malformed_json": (raw(b'{"images": [{"id": 1,'), "malformed JSON"),
    "empty_file": (raw(b""), "malformed JSON"),
    "not_utf8": (raw('{"images": [], "annotations": [], "x": "caf\xe9"}'.encode("latin-1")), "not UTF-8"),
    "nested_too_deeply": (raw(b"[" * 100_000), "nested too deeply"),
    "no_usable_captions": (put("annotations", []), "no 'train' images with usable captions"),
}


@pytest.mark.parametrize("mutate, culprit", list(COCO_CASES.values()), ids=list(COCO_CASES))
def test_coco_file_refused(tmp_path, mutate, culprit):
    data = coco_config(tmp_path, mutate, on_bad_caption="skip")
    refused(tmp_path, lambda: load_splits(data), culprit, "train.json")


def test_coco_file_outside_root_when_allowed(tmp_path):
    write_image(tmp_path / "elsewhere" / "x.png")
    data = coco_config(tmp_path, put("images", 0, "file_name", "../elsewhere/x.png"), allow_outside_root=True)
    splits = handled(tmp_path, lambda: load_splits(data))
    assert splits["train"][0].image_path == tmp_path / "images" / "../elsewhere/x.png"
    with pytest.raises(Exception, match="allow_outside_root"):
        load_splits({**data, "allow_outside_root": "yes"})


def test_coco_handled_correctly(tmp_path, caplog):
    """A BOM, the same image entry twice, a `categories` key without category ids, and repeated caption rows."""
    def mutate(data):
        data["images"].append(dict(data["images"][0]))                    # the same entry twice: harmless
        data["annotations"].append(dict(data["annotations"][0], id=999))  # the same caption twice: dropped
        data["categories"] = []                                           # pycocotools would KeyError here
        return b"\xef\xbb\xbf" + json.dumps(data).encode()
    data = coco_config(tmp_path, mutate)
    with caplog.at_level(logging.WARNING):
        splits = handled(tmp_path, lambda: load_splits(data))
    assert [r.image_id for r in splits["train"]] == list(TRAIN_IDS)
    assert splits["train"][0].captions == ["a picture number 1 take 0", "a picture number 1 take 1"]
    assert "dropped 1 repeated captions" in caplog.text and "(1)" in caplog.text


# ---------------------------------------------------------------- Karpathy split files

KARPATHY_CASES = {
    "split_typo": (put("images", 1, "split", "tset"), "images[1] (id 2): unknown split the string 'tset'"),
    "split_null": (put("images", 0, "split", None), "images[0] (id 1): unknown split null"),
    "sentences_a_string": (put("images", 2, "sentences", "a cat"), "images[2] (id 3).sentences"),
    "sentence_a_string": (put("images", 2, "sentences", ["a cat"]), "sentences[0]: expected an object"),
    "sentence_without_raw": (put("images", 0, "sentences", [{"imgid": 1}]), "sentences[0]: has no 'raw'"),
    "raw_is_a_number": (put("images", 0, "sentences", 0, "raw", 7), "sentences[0].raw"),
    "raw_is_null": (put("images", 3, "sentences", 0, "raw", None), "images[3] (id 4).sentences[0].raw"),
    "id_is_null": (put("images", 1, "imgid", None), "images[1].imgid"),
    "cocoid_is_a_list": (put("images", 1, "cocoid", [2]), "images[1].cocoid"),
    "duplicate_id": (put("images", 1, "imgid", 1), "images[1] (id 1): the id is also that of images[0]"),
    "filename_null": (put("images", 0, "filename", None), "images[0] (id 1).filename"),
    "filepath_escapes": (put("images", 0, "filepath", "../.."), "outside the image folder"),
    "image_not_an_object": (put("images", 0, 17), "images[0]: expected an object"),
    "images_not_a_list": (put("images", "all"), "images: expected a list"),
    "image_in_train_and_val": (put("images", 4, "filename", "1.png"), "both 'train' and 'val'"),
}


@pytest.mark.parametrize("mutate, culprit", list(KARPATHY_CASES.values()), ids=list(KARPATHY_CASES))
def test_karpathy_file_refused(tmp_path, mutate, culprit):
    data = karpathy_config(tmp_path, mutate)
    refused(tmp_path, lambda: load_splits(data), culprit, "dataset.json" if "both" not in culprit else "1.png")


def test_karpathy_tokens_stand_in_for_a_missing_raw(tmp_path):
    data = karpathy_config(tmp_path, put("images", 0, "sentences", [{"tokens": ["a", "red", "cat"]}]))
    assert handled(tmp_path, lambda: load_splits(data))["train"][0].captions == ["a red cat"]


# ---------------------------------------------------------------- Flickr caption tables and split files

FLICKR_CASES = {  # case: (table, split file or None for a good one, culprit)
    "row_without_caption": (flickr_table("7.png\n"), None, "line 8 has no caption column"),
    "row_without_image_name": (flickr_table(",a caption\n"), None, "line 8 has no image name"),
    "token_line_without_tab": ("1.png#0 a dog\n", None, "line 1 is neither"),
    "token_line_without_name": ("1.png#0\ta dog\n#1\ta cat\n", None, "line 2 has no image name"),
    "not_utf8": (flickr_table().encode() + b"8.png,caf\xe9\n", None, "not UTF-8"),
    "name_escapes_root": (flickr_table("../1.png,a stray\n"), "none", "'../1.png' is outside the image folder"),
    "absolute_name": (flickr_table("/etc/hostname,a stray\n"), "none", "'/etc/hostname' is outside"),
    "split_typo": (flickr_table(), {"1.png": "tset"}, "unknown split name(s) the string 'tset'"),
    "split_is_a_list": (flickr_table(), {"1.png": ["train"]}, "unknown split name(s) a list"),
    "split_file_a_list": (flickr_table(), b'["1.png"]', "split.json: expected a JSON object"),
    "split_names_unknown_image": (flickr_table(), {"1.png": "train", "9.png": "val"}, "9.png"),
    "no_usable_captions": ("image,caption\n" + "".join(f"{i}.png,{' ' if i in TRAIN_IDS else 'a cat'}\n"
                                                      for i in TRAIN_IDS + VAL_IDS), None,
                           "no 'train' images with usable captions"),
}


@pytest.mark.parametrize("table, split, culprit", list(FLICKR_CASES.values()), ids=list(FLICKR_CASES))
def test_flickr_table_refused(tmp_path, table, split, culprit):
    data = flickr_config(tmp_path, table, split, on_bad_caption="skip")
    refused(tmp_path, lambda: load_splits(data), culprit)


@pytest.mark.parametrize("form", ["csv", "tokens"])
def test_flickr_bom_is_read_correctly(tmp_path, form):
    """A UTF-8 BOM glued itself to the first image name: that image lost a caption, or the header was missed."""
    table = flickr_table() if form == "csv" else "".join(
        f"{i}.png#{k}\ta picture number {i} take {k}\n" for i in TRAIN_IDS + VAL_IDS for k in range(5))
    data = flickr_config(tmp_path, b"\xef\xbb\xbf" + table.encode())
    splits = handled(tmp_path, lambda: load_splits(data))
    assert splits["train"][0].image_id == "1.png" and len(splits["train"][0].captions) == (1 if form == "csv" else 5)
    assert sum(len(r.captions) for rs in splits.values() for r in rs) == 6 * (1 if form == "csv" else 5)


def test_flickr_duplicate_rows_are_dropped_with_a_warning(tmp_path, caplog):
    data = flickr_config(tmp_path, flickr_table("2.png,a picture number 2\n3.png, a picture number 3 \n"))
    with caplog.at_level(logging.WARNING):
        splits = handled(tmp_path, lambda: load_splits(data))
    assert [r.captions for r in splits["train"]][1:3] == [["a picture number 2"], ["a picture number 3"]]
    assert "dropped 2 repeated captions" in caplog.text and "2.png, 3.png" in caplog.text


# ---------------------------------------------------------------- clips (CSV labels, captions JSON)

def clips_config(tmp_path: Path, labels: str, captions: dict | None = None, bom: bool = False) -> dict:
    for name in ("c1", "c2", "v1"):
        write_image(tmp_path / "clips" / name / "frame_0.png")
    (tmp_path / "train.csv").write_bytes(labels.encode("utf-8-sig" if bom else "utf-8"))
    (tmp_path / "val.csv").write_text("clip,label\nv1,walk\n")
    train = {"clips": str(tmp_path / "clips"), "labels": str(tmp_path / "train.csv")}
    if captions is not None:
        train["annotations"] = str(write_json(tmp_path / "train.json", captions))
    return {"source": {"name": "clips", "train": train, "val": {"clips": str(tmp_path / "clips"),
                                                                  "labels": str(tmp_path / "val.csv")}}}


def clip_captions(**image_fields) -> dict:
    return {"images": [{"id": "c1", "file_name": "c1", **image_fields}, {"id": "c2", "file_name": "c2"}],
            "annotations": [{"id": 1, "image_id": "c1", "caption": "a clip"}, {"id": 2, "image_id": "c2", "caption": "b"}]}


CLIP_CASES = {
    "clip_name_escapes_root": ("clip,label\n../c1,walk\n", None, "'../c1' is outside the image folder"),
    "clip_in_train_and_val": ("clip,label\nv1,walk\nc1,run\n", None, "both 'train' and 'val'"),
    "clip_id_is_a_list": ("clip,label\nc1,walk\nc2,run\n", clip_captions(id=["c1"]), "train.json: images[0].id"),
    "clip_file_name_null": ("clip,label\nc1,walk\nc2,run\n", clip_captions(file_name=None), "images[0].file_name"),
    "clip_caption_a_number": ("clip,label\nc1,walk\nc2,run\n",
                              {**clip_captions(), "annotations": [{"id": 1, "image_id": "c1", "caption": 3}]},
                              "annotations[0].caption"),
}


@pytest.mark.parametrize("labels, captions, culprit", list(CLIP_CASES.values()), ids=list(CLIP_CASES))
def test_clip_files_refused(tmp_path, labels, captions, culprit):
    data = clips_config(tmp_path, labels, captions)
    refused(tmp_path, lambda: load_splits(data, captions=captions is not None), culprit)


def test_clip_labels_with_a_bom(tmp_path):
    data = clips_config(tmp_path, "clip,label\nc1,walk\nc2,run\n", bom=True)
    assert (tmp_path / "train.csv").read_bytes().startswith(b"\xef\xbb\xbf")
    splits = handled(tmp_path, lambda: load_splits(data, captions=False))
    assert [(r.clip_id, r.label) for r in splits["train"]] == [("c1", "walk"), ("c2", "run")]


# ---------------------------------------------------------------- across splits, and the splits read later

def test_coco_image_in_train_and_test(tmp_path):
    data = coco_config(tmp_path)
    test = write_json(tmp_path / "test.json", {**coco([2]), "images": [{"id": 7, "file_name": "2.png"}],
                                               "annotations": [{"id": 1, "image_id": 7, "caption": "a picture"}]})
    data["source"]["test"] = {"annotations": str(test), "images": data["source"]["train"]["images"]}
    refused(tmp_path, lambda: load_splits(data), "2.png is in both 'train' and 'test' (ids 2 and 7)")


def test_missing_test_image_found_before_training(tmp_path):
    data = coco_config(tmp_path)
    test = write_json(tmp_path / "test.json", {"images": [{"id": 8, "file_name": "gone.png"}],
                                               "annotations": [{"id": 1, "image_id": 8, "caption": "a picture"}]})
    data["source"]["test"] = {"annotations": str(test), "images": data["source"]["train"]["images"]}
    assert handled(tmp_path, lambda: load_splits(data))["test"][0].image_id == 8  # not read by this run: not checked
    refused(tmp_path, lambda: load_splits(data, also_check=("test",)), "gone.png: image file not found")
    splits = handled(tmp_path, lambda: load_splits({**data, "on_bad_image": "skip"}, also_check=("test",)))
    assert splits["test"] == [] and len(splits["train"]) == len(TRAIN_IDS)


# ---------------------------------------------------------------- images

def png_bytes(width: int, height: int, rows: bytes) -> bytes:
    """A 1-bit greyscale PNG made by hand, so its header may declare any size."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows, 9)) + chunk(b"IEND", b"")


@functools.lru_cache(maxsize=None)
def bomb_png() -> bytes:
    """The issue's bomb: a 48 KB PNG declaring 20000 x 20000 (400 M pixels) of zeros."""
    return png_bytes(20000, 20000, bytes(20000 * (1 + 20000 // 8)))


@functools.lru_cache(maxsize=None)
def huge_jpeg() -> bytes:
    """11000 x 11000 (121 M pixels): over the default limit, a real photo size for a scanner or a panorama."""
    buffer = io.BytesIO()
    Image.new("L", (11000, 11000), 128).save(buffer, "JPEG", quality=50)
    return buffer.getvalue()


def truncated_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()[:400]


BAD_IMAGES = {  # case: (bytes of train image 2.png, what the message says about it)
    "truncated": (truncated_jpeg, "corrupt or truncated image"),
    "bomb": (bomb_png, "20000x20000 is 400,000,000 pixels, over the limit of 89,478,485"),
    "over_the_pixel_limit": (huge_jpeg, "11000x11000 is 121,000,000 pixels"),
    "zero_bytes": (lambda: b"", "not a readable image"),
    "not_an_image": (lambda: b"<html>404 not found</html>", "not a readable image"),
    "header_only": (lambda: png_bytes(16, 16, b"")[:33], "not a readable image"),
    "png_cut_short": (lambda: png_bytes(16, 16, bytes(range(48)))[:-20], "corrupt or truncated image"),
}


@pytest.mark.parametrize("make, culprit, verify", [  # a header check does not decode: a truncated body is found later
    pytest.param(make, culprit, verify, id=f"{case}-{verify}") for case, (make, culprit) in BAD_IMAGES.items()
    for verify in ("full", "header") if (case, verify) != ("truncated", "header")])
def test_bad_image_refused_or_skipped(tmp_path, make, culprit, verify):
    data = coco_config(tmp_path, verify_images=verify)
    (tmp_path / "images" / "2.png").write_bytes(make())
    refused(tmp_path, lambda: load_splits(data), "2.png", culprit)
    splits = handled(tmp_path, lambda: load_splits({**data, "on_bad_image": "skip"}))
    assert [r.image_id for r in splits["train"]] == [1, 3, 4]


def test_pixel_limit_is_an_option(tmp_path):
    data = coco_config(tmp_path, verify_images="header", max_image_pixels=100)  # the 12 x 8 images have 96
    (tmp_path / "images" / "2.png").write_bytes(png_bytes(11, 10, bytes(10 * 3)))
    refused(tmp_path, lambda: load_splits(data), "2.png: 11x10 is 110 pixels, over the limit of 100")
    for bad in (-1, "many", 1.5, True):
        refused(tmp_path, lambda bad=bad: load_splits({**data, "max_image_pixels": bad}), "data.max_image_pixels")
    assert len(handled(tmp_path, lambda: load_splits({**data, "max_image_pixels": 0}))["train"]) == 4


def test_a_thin_image_within_the_pixel_limit_is_refused_before_its_resize(tmp_path):
    """A 1 x 80,000,000 image passes the pixel limit, and resizing its short side to 256 would make 20 billion pixels:
    every reader refuses images whose long side is over 100 times the short one, naming the file."""
    data = coco_config(tmp_path, verify_images="header")
    (tmp_path / "images" / "2.png").write_bytes(png_bytes(1, 20_000, bytes(20_000 * 2)))  # a PNG header holds any size
    refused(tmp_path, lambda: load_splits(data), "2.png: 1x20000 is too thin to caption")
    assert [r.image_id for r in handled(tmp_path, lambda: load_splits({**data, "on_bad_image": "skip"}))["train"]] \
        == [1, 3, 4]
    with pytest.raises(ImageReadError, match="2.png: 1x20000"):
        load_rgb(tmp_path / "images" / "2.png")
    panorama = tmp_path / "panorama.png"
    Image.new("RGB", (1000, 10)).save(panorama)  # 100 to 1: kept
    assert load_rgb(panorama).size == (1000, 10)
    from captioning.data.inputs import ImageInputs
    transform = build_transform({"input_size": 32, "mean": [0.5] * 3, "std": [0.5] * 3})
    assert ImageInputs().read(panorama, transform).shape == (3, 32, 32)
    with pytest.raises(ImageReadError, match="an image given in memory: 2000x10 is too thin"):  # the Python API's PIL images
        ImageInputs().read(Image.new("RGB", (2000, 10)), transform)


def test_huge_jpeg_decodes_at_reduced_size_when_allowed(tmp_path):
    path = tmp_path / "huge.jpg"
    path.write_bytes(huge_jpeg())
    with pytest.raises(ImageReadError, match="huge.jpg: 11000x11000"):
        load_rgb(path)
    image = load_rgb(path, size=256, max_pixels=200_000_000)  # draft mode: 1/8 scale, both sides still >= 256
    assert image.size == (1375, 1375) and image.mode == "RGB"


def test_jpeg_draft_is_an_opt_in_option(tmp_path):
    """Off by default (pixels on good data stay as they were); on, JPEGs decode at the size the encoder resizes to."""
    preprocess = {"input_size": 224, "crop_pct": 0.875, "mean": [0.5] * 3, "std": [0.5] * 3}
    assert image_options({}, preprocess) == {"size": None, "max_pixels": MAX_IMAGE_PIXELS}
    assert image_options({"jpeg_draft": True, "max_image_pixels": None}, preprocess) == {"size": 256, "max_pixels": None}
    refused(tmp_path, lambda: image_options({"jpeg_draft": "yes"}, preprocess), "data.jpeg_draft must be true or false")
    path = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (1200, 2400, 3), dtype=np.uint8)).save(path)
    records = [CaptionRecord(1, path, "train", ["a photo"])]
    full, draft = (ImageLoader(records, build_transform(preprocess), **image_options(data, preprocess))(0)
                   for data in ({}, {"jpeg_draft": True}))
    assert full.shape == draft.shape == (3, 224, 224) and not torch.equal(full, draft)
    assert load_rgb(path, size=256).size == (600, 300) and load_rgb(path).size == (2400, 1200)  # 1/4 scale, >= 256


def odd_image(kind: str, path: Path) -> Path:
    gradient = np.tile(np.arange(0, 256, 16, dtype=np.uint8), (8, 1))  # (8, 16)
    if kind == "cmyk":
        Image.fromarray(gradient).convert("CMYK").save(path, "JPEG")
    elif kind == "16bit":
        Image.fromarray(gradient.astype(np.uint16) * 257).save(path, "PNG")
    elif kind == "palette_transparent":
        image = Image.fromarray(gradient).convert("P")
        image.info["transparency"] = 0
        image.save(path, "PNG", transparency=0)
    elif kind == "exif_rotated":
        image = Image.fromarray(gradient).convert("RGB")
        exif = image.getexif()
        exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
        image.save(path, "JPEG", exif=exif.tobytes())
    return path


@pytest.mark.parametrize("kind, size", [("cmyk", (16, 8)), ("16bit", (16, 8)), ("palette_transparent", (16, 8)),
                                        ("exif_rotated", (8, 16))])
def test_odd_images_are_read_correctly(tmp_path, kind, size):
    data = coco_config(tmp_path)
    odd_image(kind, tmp_path / "images" / "2.png")
    record = handled(tmp_path, lambda: load_splits(data))["train"][1]
    image = load_rgb(record.image_path)
    assert image.mode == "RGB" and image.size == size
    pixels = np.asarray(image).astype(int)
    if kind == "palette_transparent":
        assert (pixels[:, 0] == 255).all()  # the transparent (index 0) column is composited on white
    elif kind != "exif_rotated":
        assert pixels[0, 0, 0] < 30 and pixels[0, -1, 0] > 200  # the gradient survives (16-bit rescaled, not clipped)


# ---------------------------------------------------------------- the vocabulary

def test_vocabulary_of_special_tokens_only_is_refused(tmp_path):
    vocab = Vocabulary.build(["a cat", "a dog"], min_count=5)
    refused(tmp_path, lambda: check_vocabulary(vocab, 5, "data.source (captions.txt)"),
            "captions.txt", "no word occurs 5 or more times")
    check_vocabulary(Vocabulary.build(["a cat", "a dog"], min_count=2), 2, "x")  # 'a' is a word


@pytest.mark.parametrize("words", [["<pad>", "<start>"], [0, 1], ["<pad>", "<start>", "<end>", "<unk>", "a", "a"],
                                   ["<pad>", "<start>", "<end>", "<unk>", ""]])
def test_malformed_vocabulary_file(tmp_path, words):
    (tmp_path / "vocab.json").write_text(json.dumps(words))
    refused(tmp_path, lambda: Vocabulary.load(tmp_path / "vocab.json"), "vocab.json: not a vocabulary file")


# ---------------------------------------------------------------- the whole training command

def train_overrides(tmp_path: Path, data_overrides: list[str]) -> list[str]:
    return data_overrides + ["train.max_steps=1", "train.batch_size=4", "model.decoder.hidden_size=8",
                             "model.decoder.embed_size=8", "model.encoder.width=4", "model.encoder.out_dim=8",
                             "vocab.min_count=1", "train.show_examples=0", "seed=0"]


def coco_overrides(tmp_path: Path) -> list[str]:
    return ["data=coco", f"data.train.annotations={tmp_path / 'train.json'}", f"data.train.images={tmp_path / 'images'}",
            f"data.val.annotations={tmp_path / 'val.json'}", f"data.val.images={tmp_path / 'images'}"]


@pytest.mark.parametrize("case", ["no_captions", "split_typo", "bomb"])
def test_training_refuses_before_the_first_step(tmp_path, case):
    from captioning.tasks import train

    if case == "split_typo":
        karpathy_config(tmp_path, put("images", 1, "split", "tset"))
        overrides, culprit = ["data=karpathy", f"data.dataset_json={tmp_path / 'dataset.json'}",
                              f"data.image_root={tmp_path}"], "'tset'"
    else:
        coco_config(tmp_path, put("annotations", []) if case == "no_captions" else lambda d: d)
        overrides, culprit = coco_overrides(tmp_path), "no 'train' images with usable captions"
        if case == "bomb":
            (tmp_path / "images" / "2.png").write_bytes(bomb_png())
            culprit = "2.png: 20000x20000"
    cfg = compose_train(train_overrides(tmp_path, overrides), tmp_path / "run")
    refused(tmp_path, lambda: train(cfg), culprit)
    assert not (tmp_path / "run" / "checkpoints" / "last.pt").exists()


def test_training_skips_a_bomb_when_asked(tmp_path):
    from captioning.tasks import train

    coco_config(tmp_path)
    (tmp_path / "images" / "2.png").write_bytes(bomb_png())
    cfg = compose_train(train_overrides(tmp_path, coco_overrides(tmp_path) + ["data.on_bad_image=skip"]),
                        tmp_path / "run")
    handled(tmp_path, lambda: train(cfg))
    assert (tmp_path / "run" / "checkpoints" / "last.pt").is_file()
