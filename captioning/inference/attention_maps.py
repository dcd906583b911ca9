"""Attention maps: one PNG per image, a panel per word showing where on the image that word looked.

Each panel is the image as the encoder saw it (resized and centre-cropped by its preprocessing) with
the word's attention weights, upsampled from the grid, drawn over it; the word is the panel's title.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from captioning.config import OptionError
from captioning.data.images import load_rgb
from captioning.data.transforms import decode_size
from captioning.inference.captioner import Caption, Captioner, grid_shape
from captioning.inference.paths import file_keys

PANELS_PER_ROW = 5


def model_view(image: Image.Image, preprocess: dict) -> Image.Image:
    """The picture the encoder saw: resized and centre-cropped as its preprocessing does, before normalising."""
    return T.Compose([T.Resize(decode_size(preprocess), antialias=True), T.CenterCrop(int(preprocess["input_size"]))])(image)


def upsampled(weights: list[float], grid: list[int], size: tuple[int, int]) -> np.ndarray:
    """One word's weights over the grid cells -> an (H, W) map over the image, bilinear, scaled to [0, 1]."""
    cells = torch.tensor(weights, dtype=torch.float32).view(1, 1, *grid)
    heat = F.interpolate(cells, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()
    return heat / max(float(heat.max()), 1e-12)


def attention_figure(image: Image.Image, caption: Caption, preprocess: dict):
    """The panels of `caption` (it must hold attention weights) over `image`, as a matplotlib figure (close it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if caption.attention is None or caption.grid is None:
        raise ValueError("the caption holds no attention weights (caption it with return_attention=True)")
    view = model_view(image.convert("RGB"), preprocess)
    words = caption.caption.split()
    columns = min(PANELS_PER_ROW, max(len(words), 1))
    rows = max(math.ceil(len(words) / columns), 1)
    figure, axes = plt.subplots(rows, columns, figsize=(2.2 * columns, 2.4 * rows), squeeze=False, dpi=80)
    for axis in axes.flat:
        axis.axis("off")
    for axis, word, weights in zip(axes.flat, words, caption.attention, strict=False):
        heat = upsampled(weights, caption.grid, (view.height, view.width))
        overlay = plt.get_cmap("inferno")(heat)  # (H, W, 4): opaque where the word looked, clear where it did not
        overlay[..., 3] = 0.75 * heat
        axis.imshow(view)
        axis.imshow(overlay)
        axis.set_title(word, fontsize=11)
    figure.suptitle(caption.caption, fontsize=10)
    figure.tight_layout()
    return figure


def attention_array(image: Image.Image, caption: Caption, preprocess: dict) -> np.ndarray:
    """The panels of `caption` over `image` as an (H, W, 3) uint8 array (TensorBoard, the demo page)."""
    import matplotlib.pyplot as plt

    figure = attention_figure(image, caption, preprocess)
    try:
        figure.canvas.draw()
        return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()
    finally:
        plt.close(figure)


def draw_attention(image: Image.Image, caption: Caption, preprocess: dict, output: Path) -> Path:
    """Write the panels of `caption` over `image` to `output` (PNG), atomically."""
    import matplotlib.pyplot as plt

    figure = attention_figure(image, caption, preprocess)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(f"{output.name}.tmp.png")
    try:
        figure.savefig(temporary)
        temporary.replace(output)
    finally:
        plt.close(figure)
        temporary.unlink(missing_ok=True)
    return output


def map_paths(inputs: list[Path], folder: str, overwrite: bool) -> dict[Path, Path]:
    """Each input's PNG in `folder` (its file name, numbered when two inputs share one), checked before any
    captioning: `folder` must be a folder, a PNG there is replaced only with `overwrite=true`, and never when it is
    one of the inputs (a map written into the images' own folder, `a.jpg`'s map over `a.png`)."""
    target = Path(folder).expanduser()
    inputs_by_key = {key: path for path in inputs for key in file_keys(path)}
    if target.exists() and not target.is_dir():
        clash = next((inputs_by_key[key] for key in file_keys(target) if key in inputs_by_key), None)
        raise OptionError(f"attention_maps={folder!r}: " + (f"that is {clash}, one of the inputs being captioned; "
                          "give a folder for the maps" if clash is not None else "a file, not a folder"))
    names: dict[Path, Path] = {}
    taken: set[str] = set()
    for path in inputs:
        name = f"{path.stem}.png"
        number = 1
        while name in taken:
            number += 1
            name = f"{path.stem}-{number}.png"
        taken.add(name)
        names[path] = target / name
    for path, png in names.items():
        clash = next((inputs_by_key[key] for key in file_keys(png) if key in inputs_by_key), None)
        if clash is not None:
            raise OptionError(f"attention_maps={folder!r}: the map of {path} would be written over {clash}, one of "
                              "the inputs being captioned (overwrite=true never replaces an input); give another folder")
    existing = [png for png in names.values() if png.exists()]
    if existing and not overwrite:
        raise OptionError(f"attention_maps={folder!r}: {existing[0]} exists; give overwrite=true to replace "
                          "the maps there, or another folder")
    if existing:
        print(f"replacing {len(existing)} attention maps in {target} (overwrite=true)", file=sys.stderr)
    return names


def map_writer(captioner: Captioner, paths: list[Path], folder: str | None, overwrite: bool):
    """`attention_maps=DIR` of caption.py: what writes each image's map (None when not asked). Refused before any
    captioning: a decoder without attention, or maps that would replace files without `overwrite=true`."""
    if not folder:
        return None
    if not captioner.has_attention():
        raise OptionError(f"attention_maps={folder!r}: {captioner.no_attention_reason()}")
    maps = map_paths(paths, folder, overwrite)
    return lambda path, caption: draw_attention(load_rgb(path), caption, captioner.preprocess, maps[path])


def validation_maps(model: torch.nn.Module, vocab, preprocess: dict, max_words: int, images: list[Path],
                    memory, device: torch.device) -> list[np.ndarray]:
    """Greedy captions of a few validation images (their `memory`) drawn with their attention panels, as (H, W, 3)
    uint8 arrays for TensorBoard. The model's training mode is restored afterwards."""
    training = model.training
    captioner = Captioner(model, vocab, preprocess, max_words, device)
    try:
        tokens, scores = captioner.decode(memory, beam_size=1)
        captions = captioner.to_captions(tokens, scores)
        arrays = []
        for path, caption, weights in zip(images, captions, captioner.attention(memory, tokens[:, 0]), strict=True):
            caption.attention, caption.grid = weights.tolist(), grid_shape(weights.size(1))
            arrays.append(attention_array(load_rgb(path), caption, preprocess))
    finally:
        model.train(training)
    return arrays
