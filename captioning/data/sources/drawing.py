"""The built-in data sets' coloured shapes: still pictures of one to three, and clips of one moving shape.

Every random draw comes from the `rng` passed in, in a fixed order: the same seed gives the same
pixels, byte for byte, so published figures and users' caches stay valid. Changing any draw, or
its order, changes the data: bump the VERSION in `synthetic.py` when you do.
"""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (235, 200, 20)}
SHAPES = ("circle", "square", "triangle")
SLOTS = 3  # horizontal slots of a still picture, one shape at most in each
DIRECTIONS = {"up": (0, -1), "down": (0, 1), "left": (-1, 0), "right": (1, 0)}  # unit step in image (x, y)
RADIUS = (0.14, 0.20)  # a moving shape's radius, as fractions of the side
SPEED = (1 / 8, 1 / 5)  # shape speed per frame, as fractions of the side (under 1/2: no ambiguity across the wrap)


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, radius: float, fill: tuple) -> None:
    box = (cx - radius, cy - radius, cx + radius, cy + radius)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - radius), (cx - radius, cy + radius), (cx + radius, cy + radius)], fill=fill)


def jittered_fill(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    """The named colour, each channel moved by up to 20 levels."""
    return tuple(int(np.clip(c + rng.integers(-20, 21), 0, 255)) for c in COLOURS[colour])


def with_noise(rng: np.random.Generator, image: Image.Image) -> Image.Image:
    """The picture with up to 12 levels of uniform noise on every pixel and channel."""
    width, height = image.size
    pixels = np.asarray(image, dtype=np.int16) + rng.integers(-12, 13, size=(height, width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def draw_example(rng: np.random.Generator, image_size: int,
                 boxes: list | None = None) -> tuple[Image.Image, list[tuple[str, str]]]:
    """-> a still picture, and its shapes left to right as (colour, shape); each shape's bounding box
    (x0, y0, x1, y1) in pixels is appended to `boxes` when a list is given (the draws are the same either way)."""
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
        draw_shape(draw, shape, cx, cy, radius, jittered_fill(rng, colour))
        objects.append((colour, shape))
        if boxes is not None:
            boxes.append((cx - radius, cy - radius, cx + radius, cy + radius))
    return with_noise(rng, image), objects


def draw_clip(rng: np.random.Generator, image_size: int, frames: int) -> tuple[list[Image.Image], str, str, str]:
    """-> frames, colour, shape, direction of one shape moving across a picture that wraps around its edges."""
    S = image_size
    colour, shape = str(rng.choice(list(COLOURS))), str(rng.choice(SHAPES))
    direction = str(rng.choice(list(DIRECTIONS)))
    x, y = rng.uniform(0, S, size=2)
    speed = S * rng.uniform(*SPEED)
    radius = S * rng.uniform(*RADIUS)
    background = int(rng.integers(200, 256))
    fill = jittered_fill(rng, colour)
    dx, dy = DIRECTIONS[direction]
    images = []
    for t in range(frames):
        image = Image.new("RGB", (S, S), (background,) * 3)
        draw = ImageDraw.Draw(image)
        cx, cy = (x + dx * speed * t) % S, (y + dy * speed * t) % S
        for wrap_x in (-S, 0, S):  # the copies that show the part beyond an edge on the opposite side
            for wrap_y in (-S, 0, S):
                draw_shape(draw, shape, cx + wrap_x, cy + wrap_y, radius, fill)
        images.append(with_noise(rng, image))
    return images, colour, shape, direction
