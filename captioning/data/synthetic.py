"""The built-in data set: coloured shapes whose captions are fully determined by the picture.

Generated deterministically (seeded) on first use into a cache folder as PNG images plus one
COCO-format caption file per split, then read through the same COCO reader as real data.
Each image holds one to three shapes in distinct horizontal slots; its five captions name
colour, shape, count and left-to-right order in five phrasings, so a captioner that looks at the
image can score high and one that ignores it cannot.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image, ImageDraw

from captioning.data.records import CaptionRecord
from captioning.data.sources import coco_splits

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle")
COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
SLOTS = 3
VERSION = 1  # bump when drawing or captions change, so old caches are not reused


def _and_list(phrases: list[str]) -> str:
    if len(phrases) == 1:
        return phrases[0]
    return " , ".join(phrases[:-1]) + " and " + phrases[-1]


def describe(objects: list[tuple[str, str]]) -> list[str]:
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


def draw_example(rng: np.random.Generator, image_size: int) -> tuple[Image.Image, list[tuple[str, str]]]:
    background = int(rng.integers(200, 256))
    image = Image.new("RGB", (image_size, image_size), (background,) * 3)
    draw = ImageDraw.Draw(image)
    count = int(rng.integers(1, SLOTS + 1))
    slots = sorted(rng.choice(SLOTS, size=count, replace=False).tolist())
    slot_width = image_size / SLOTS
    objects = []
    for slot in slots:
        colour = str(rng.choice(list(COLOURS)))
        shape = str(rng.choice(SHAPES))
        radius = slot_width * rng.uniform(0.28, 0.40)
        cx = slot_width * (slot + 0.5) + rng.uniform(-0.08, 0.08) * slot_width
        cy = image_size * rng.uniform(0.3, 0.7)
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        fill = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[colour])
        if shape == "circle":
            draw.ellipse(box, fill=fill)
        elif shape == "square":
            draw.rectangle(box, fill=fill)
        else:
            draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)
        objects.append((colour, shape))
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, size=(image_size, image_size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), objects


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


def generate(root: Path, sizes: dict[str, int], image_size: int, seed: int) -> None:
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
                for caption in describe(objects):
                    annotations.append({"id": len(annotations) + 1, "image_id": next_id, "caption": caption})
                next_id += 1
            dataset = {"info": {"description": f"synthetic shapes v{VERSION}, seed {seed}"}, "licenses": [],
                       "images": images, "annotations": annotations}
            (staging / f"captions_{split}.json").write_text(json.dumps(dataset))


def synthetic_splits(root: str | Path, num_train: int = 3000, num_val: int = 200, num_test: int = 200,
                     image_size: int = 64, seed: int = 0) -> dict[str, list[CaptionRecord]]:
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    folder = Path(root).expanduser() / f"shapes-v{VERSION}-{image_size}px-{num_train}-{num_val}-{num_test}-seed{seed}"
    if not folder.is_dir():
        generate(folder, sizes, image_size, seed)
    return coco_splits(**{
        split: {"annotations": folder / f"captions_{split}.json", "images": folder / "images"} for split in sizes
    })
