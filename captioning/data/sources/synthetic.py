"""The built-in data sets, generated deterministically (seeded) on first use into a cache folder.

`synthetic` (images): one to three coloured shapes in distinct horizontal slots, written as PNG
images plus one COCO caption file per split and read through the COCO reader like real data. The
five captions name colour, shape, count and left-to-right order in five phrasings, so a captioner
that looks at the image can score high and one that ignores it cannot.

`synthetic_clips`: one coloured shape moving up, down, left or right, written as frame folders (one
PNG per frame), `labels_{split}.csv` (activity = direction) and `captions_{split}.json` (COCO-like,
e.g. "a red square moves up"), read through the `clips` source. The picture wraps around its edges
and the shape starts anywhere, so no single frame says which way it moves; only the change does.
"""
from __future__ import annotations

import contextlib
import csv
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np

from captioning.data.clips import ClipRecord
from captioning.data.records import CaptionRecord, DataError
from captioning.data.sources.clips import clip_splits
from captioning.data.sources.coco import coco_splits
from captioning.data.sources.drawing import draw_clip, draw_example
from captioning.data.sources.registry import SOURCES

# Bump one when its drawing or captions change, so old caches are not reused.
IMAGES_VERSION = 1
CLIPS_VERSION = 1
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}


def _and_list(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return " , ".join(phrases[:-1]) + " and " + phrases[-1]


def describe_shapes(objects: list[tuple[str, str]]) -> list[str]:
    """Five captions for shapes listed left to right as (colour, shape)."""
    phrases = [f"a {colour} {shape}" for colour, shape in objects]
    n = len(phrases)
    listing = _and_list(phrases)
    if n == 1:
        colour, shape = objects[0]
        return [listing, f"one shape : {listing}", f"a single {colour} {shape}",
                f"{listing} on its own", f"a picture of {listing}"]
    return [
        listing,
        f"{COUNT_WORDS[n]} shapes : {listing}",
        " to the left of ".join(phrases),
        " to the right of ".join(reversed(phrases)),
        f"a picture of {listing}",
    ]


def describe_motion(colour: str, shape: str, direction: str) -> list[str]:
    """Five captions of one moving shape."""
    return [f"a {colour} {shape} moves {direction}", f"a {colour} {shape} is moving {direction}",
            f"the {colour} {shape} goes {direction}", f"a {colour} {shape} moving {direction}",
            f"a {colour} {shape} slides {direction}"]


@contextlib.contextmanager
def staged_folder(root: Path) -> Iterator[Path]:
    """A temporary folder beside `root` that becomes `root` in one rename when the block succeeds.

    A killed or failed generation leaves no half-written `root`; when two processes generate at
    once, whichever finishes first wins and the other's copy is dropped.
    """
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".tmp-", dir=root.parent))
    try:
        yield staging
        try:
            os.replace(staging, root)
        except OSError:
            if not root.is_dir():  # another process finishing first is fine; anything else is not
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def write_captions(path: Path, description: str, images: list[dict], annotations: list[dict]) -> None:
    path.write_text(json.dumps({"info": {"description": description}, "licenses": [],
                                "images": images, "annotations": annotations}))


def generate_images(root: Path, sizes: dict[str, int], image_size: int, seed: int) -> None:
    """Write images/ and captions_{split}.json under `root`, atomically (temp folder, then rename)."""
    with staged_folder(root) as staging:
        (staging / "images").mkdir()
        next_id = 1
        for split_index, (split, count) in enumerate(sizes.items()):
            rng = np.random.default_rng([seed, split_index])
            images, annotations = [], []
            for _ in range(count):
                image, objects = draw_example(rng, image_size)
                file_name = f"{split}_{next_id:06d}.png"
                image.save(staging / "images" / file_name)
                images.append({"id": next_id, "file_name": file_name, "width": image_size, "height": image_size})
                for caption in describe_shapes(objects):
                    annotations.append({"id": len(annotations) + 1, "image_id": next_id, "caption": caption})
                next_id += 1
            write_captions(staging / f"captions_{split}.json", f"synthetic shapes v{IMAGES_VERSION}, seed {seed}",
                           images, annotations)


def generate_clips(root: Path, sizes: dict[str, int], image_size: int, frames: int, seed: int) -> None:
    """Write clips/, labels_{split}.csv and captions_{split}.json under `root`, atomically (temp folder, then rename)."""
    with staged_folder(root) as staging:
        for split_index, (split, count) in enumerate(sizes.items()):
            rng = np.random.default_rng([seed, split_index])
            rows, images, annotations = [], [], []
            for number in range(count):
                clip, colour, shape, direction = draw_clip(rng, image_size, frames)
                name = f"{split}_{number:05d}"
                (staging / "clips" / name).mkdir(parents=True)
                for t, frame in enumerate(clip):
                    frame.save(staging / "clips" / name / f"frame_{t:02d}.png")
                rows.append((name, direction))
                images.append({"id": name, "file_name": name, "width": image_size, "height": image_size, "frames": frames})
                # The five captions of a clip share one annotation id (the list is built before `+=`): the
                # files of CLIPS_VERSION 1 are written this way, and changing it would change them.
                annotations += [{"id": len(annotations) + 1, "image_id": name, "caption": caption}
                                for caption in describe_motion(colour, shape, direction)]
            with open(staging / f"labels_{split}.csv", "w", newline="") as handle:
                csv.writer(handle).writerows([("clip", "label"), *rows])
            write_captions(staging / f"captions_{split}.json", f"synthetic moving shapes v{CLIPS_VERSION}, seed {seed}",
                           images, annotations)


GENERATED = ("synthetic", "synthetic_clips")  # the sources that write their data set when it is not there yet


def check_generated(folder: Path, generate: bool) -> bool:
    """Whether `folder` must be generated now; refused when the spec came from a file (`generate=False`): a
    checkpoint's spec must not choose where this writes or how many images it draws."""
    if folder.is_dir():
        return False
    if not generate:
        raise DataError(f"data.source: {folder} is not generated, and a data set named by a file is only read, "
                        "never generated (its folder and sizes are the file's choice); give data=... on the "
                        "command line")
    return True


@SOURCES.register("synthetic")
def synthetic_splits(root: str | Path, num_train: int = 3000, num_val: int = 200, num_test: int = 200,
                     image_size: int = 64, seed: int = 0, *, allow_outside_root: bool = False,
                     generate: bool = True) -> dict[str, list[CaptionRecord]]:
    """Still pictures of shapes with five captions each (`allow_outside_root` is accepted as every source's is;
    the generated file names are always inside the folder). `generate=False` (a spec read from a checkpoint;
    never given by the spec): read an already generated folder only."""
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    folder = (Path(root).expanduser() /
              f"shapes-v{IMAGES_VERSION}-{image_size}px-{num_train}-{num_val}-{num_test}-seed{seed}")
    if check_generated(folder, generate):
        generate_images(folder, sizes, image_size, seed)
    return coco_splits(**{
        split: {"annotations": folder / f"captions_{split}.json", "images": folder / "images"} for split in sizes
    })


@SOURCES.register("synthetic_clips")
def synthetic_clip_splits(root: str | Path, num_train: int = 2000, num_val: int = 200, num_test: int = 200,
                          image_size: int = 64, frames: int = 8, seed: int = 0, *,
                          allow_outside_root: bool = False, generate: bool = True) -> dict[str, list[ClipRecord]]:
    """Clips with both an activity label (the direction) and five captions each."""
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    folder = (Path(root).expanduser() /
              f"moving-v{CLIPS_VERSION}-{image_size}px-{frames}f-{num_train}-{num_val}-{num_test}-seed{seed}")
    if check_generated(folder, generate):
        generate_clips(folder, sizes, image_size, frames, seed)
    return clip_splits(**{split: {"clips": folder / "clips", "labels": folder / f"labels_{split}.csv",
                                  "annotations": folder / f"captions_{split}.json"} for split in sizes})
