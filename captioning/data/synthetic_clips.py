"""The built-in clip data set: one coloured shape moving up, down, left or right.

Generated deterministically (seeded) on first use into a cache folder as frame folders (one PNG
per frame), `labels_{split}.csv` (activity = direction) and `captions_{split}.json` (COCO-like,
e.g. "a red square moves up"), then read through `clip_splits` like user data.

The picture wraps around its edges (a shape leaving on the right comes back on the left) and
starts anywhere, so in every frame the shape's position is uniform whatever the direction: no
single frame says which way the shape moves; only the change between frames does.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from captioning.data.clip_sources import clip_splits
from captioning.data.clips import ClipRecord
from captioning.data.synthetic import COLOURS, SHAPES, staged_folder

DIRECTIONS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}  # unit step in image (x, y)
RADIUS = (0.14, 0.20)  # shape radius, as fractions of the side
SPEED = (1 / 8, 1 / 5)  # shape speed per frame, as fractions of the side (under 1/2: no ambiguity across the wrap)
VERSION = 1  # bump when drawing or captions change, so old caches are not reused


def describe(colour: str, shape: str, direction: str) -> list[str]:
    """Five captions of one moving shape."""
    return [f"a {colour} {shape} moves {direction}", f"a {colour} {shape} is moving {direction}",
            f"the {colour} {shape} goes {direction}", f"a {colour} {shape} moving {direction}",
            f"a {colour} {shape} slides {direction}"]


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, fill: tuple) -> None:
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)


def draw_clip(rng: np.random.Generator, image_size: int, frames: int) -> tuple[list[Image.Image], str, str, str]:
    """-> frames, colour, shape, direction."""
    S = image_size
    colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
    direction = str(rng.choice(list(DIRECTIONS)))
    x, y = rng.uniform(0, S, size=2)
    speed = S * rng.uniform(*SPEED)
    radius = S * rng.uniform(*RADIUS)
    background = int(rng.integers(200, 256))
    fill = tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[colour])
    dx, dy = DIRECTIONS[direction]
    images = []
    for t in range(frames):
        image = Image.new("RGB", (S, S), (background,) * 3)
        draw = ImageDraw.Draw(image)
        cx, cy = (x + dx * speed * t) % S, (y + dy * speed * t) % S
        for wrap_x in (-S, 0, S):  # the copies that show the part beyond an edge on the opposite side
            for wrap_y in (-S, 0, S):
                _draw_shape(draw, shape, cx + wrap_x, cy + wrap_y, radius, fill)
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, size=(S, S, 3))
        images.append(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)))
    return images, colour, shape, direction


def generate(root: Path, sizes: dict[str, int], image_size: int, frames: int, seed: int) -> None:
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
                annotations += [{"id": len(annotations) + 1, "image_id": name, "caption": caption}
                                for caption in describe(colour, shape, direction)]
            with open(staging / f"labels_{split}.csv", "w", newline="") as handle:
                csv.writer(handle).writerows([("clip", "label"), *rows])
            (staging / f"captions_{split}.json").write_text(json.dumps({
                "info": {"description": f"synthetic moving shapes v{VERSION}, seed {seed}"}, "licenses": [],
                "images": images, "annotations": annotations}))


def synthetic_clip_splits(root: str | Path, num_train: int = 2000, num_val: int = 200, num_test: int = 200,
                          image_size: int = 64, frames: int = 8, seed: int = 0) -> dict[str, list[ClipRecord]]:
    """Clips with both an activity label (the direction) and five captions each."""
    sizes = {"train": num_train, "val": num_val, "test": num_test}
    folder = (Path(root).expanduser() /
              f"moving-v{VERSION}-{image_size}px-{frames}f-{num_train}-{num_val}-{num_test}-seed{seed}")
    if not folder.is_dir():
        generate(folder, sizes, image_size, frames, seed)
    return clip_splits(**{split: {"clips": folder / "clips", "labels": folder / f"labels_{split}.csv",
                                  "annotations": folder / f"captions_{split}.json"} for split in sizes})
