"""Does attention go where the words are? Measured on fresh built-in shape pictures whose shape boxes are known.

For each picture of 2-3 different shapes, the reference caption "a red circle to the left of a blue square" is fed
to the decoder word by word (teacher forcing, as `Captioner.attention` does), and each colour and shape word's
attention weights are read. A word's mass on the shape it names = sum over grid cells of (weight x fraction of
the cell the shape's bounding box covers). Uniform attention gives the box's share of the image; the ratio of
the two is 1 for a decoder that does not look and grows as it looks at the named shape.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from captioning.data.sources.drawing import draw_example
from captioning.data.sources.synthetic import describe_shapes
from captioning.inference.captioner import Captioner

SIZE = 64  # the built-in shapes' side in pixels


def pictures_of_several_shapes(count: int, seed: int, size: int = SIZE) -> list[tuple[Image.Image, list[str], list[tuple]]]:
    """Fresh pictures (not the training set's) of 2-3 different shapes: (image, caption words, per named shape
    (colour word index, shape word index, bounding box)), the caption naming them left to right."""
    rng, pictures = np.random.default_rng(seed), []
    while len(pictures) < count:
        boxes: list = []
        image, objects = draw_example(rng, size, boxes)
        if len(objects) < 2 or len(set(objects)) < len(objects):
            continue
        words = describe_shapes(objects)[2].split()  # "a red circle to the left of a blue square"
        named = [(i + 1, i + 2, boxes[k]) for k, i in enumerate(j for j, w in enumerate(words) if w == "a")]
        pictures.append((image, words, named))
    return pictures


def cell_coverage(box: tuple, side: int, size: int = SIZE) -> torch.Tensor:
    """Fraction of each of the side x side grid cells (row-major) that the box (x0, y0, x1, y1) covers."""
    x0, y0, x1, y1 = (torch.tensor(float(v)) for v in box)
    edges = torch.arange(side + 1) * (size / side)
    overlap_x = (torch.minimum(edges[1:], x1) - torch.maximum(edges[:-1], x0)).clamp(min=0)
    overlap_y = (torch.minimum(edges[1:], y1) - torch.maximum(edges[:-1], y0)).clamp(min=0)
    return (overlap_y[:, None] * overlap_x[None, :] / (size / side) ** 2).flatten()


@torch.no_grad()
def localisation(captioner: Captioner, count: int = 60, seed: int = 12345) -> dict[str, float]:
    """{"colour", "shape", "all"}: the mean ratio of each word kind's mass on its shape to the uniform mass."""
    ratios: dict[str, list[float]] = {"colour": [], "shape": []}
    for image, words, named in pictures_of_several_shapes(count, seed):
        memory = captioner.encode(captioner.read(image)[None])
        tokens = torch.tensor([captioner.vocab.encode(" ".join(words), len(words))])  # <start> the words <end>
        weights = captioner.model.decoder.attention_weights(memory, tokens)[0]  # (T, N): row t -> word t
        side = int(round(weights.size(1) ** 0.5))
        for colour_at, shape_at, box in named:
            coverage = cell_coverage(box, side)
            share = float(coverage.mean())
            ratios["colour"].append(float(weights[colour_at] @ coverage) / share)
            ratios["shape"].append(float(weights[shape_at] @ coverage) / share)
    return {**{kind: float(np.mean(values)) for kind, values in ratios.items()},
            "all": float(np.mean(ratios["colour"] + ratios["shape"]))}
