"""What one input of a model is: an image, or a clip of frames. Tasks, training and the Captioner ask
their input strategy how to find, read, batch and check inputs, and never branch on the kind themselves."""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from PIL import Image
from torchvision.transforms.functional import to_pil_image

from captioning.data.batches import stack_clips
from captioning.data.clips import ClipLoader, check_clip, frame_files, load_clip
from captioning.data.datasets import ImageLoader, collate, collate_captioned_clips
from captioning.data.images import check_aspect, check_image, load_rgb, to_rgb

GLOB_CHARACTERS = set("*?[")
Transform = Callable[[Image.Image], torch.Tensor]


def expand(spec: str | Sequence[str], listing: Callable[[Path], list[Path]]) -> list[Path]:
    """A path, a folder (`listing` of it), a glob, or a list of these -> paths; a glob that matches nothing is
    returned as it is, so it is reported as missing."""
    if not isinstance(spec, str):
        return [path for item in spec for path in expand(str(item), listing)]
    if GLOB_CHARACTERS & set(spec):
        return sorted(Path(p) for p in glob.glob(str(Path(spec).expanduser()), recursive=True)) or [Path(spec)]
    path = Path(spec).expanduser()
    return listing(path) if path.is_dir() else [path]


class ImageInputs:
    """Inputs are images (3, S, S)."""
    kind = "image"
    check = staticmethod(check_image)
    collate = staticmethod(collate)
    stack = staticmethod(torch.stack)
    checkpoint_extras: dict = {}

    def __init__(self, keep_in_memory: bool = False):
        self.keep_in_memory = bool(keep_in_memory)

    def loader(self, records: list, transform: Transform, **image_options) -> Callable[[int], torch.Tensor]:
        """`image_options`: `data.loading.image_options` (pixel limit, reduced JPEG decoding)."""
        return ImageLoader(records, transform, **image_options, keep=self.keep_in_memory)

    def read(self, item: Any, transform: Transform) -> torch.Tensor:
        """A path, a PIL image, or an image tensor (3, H, W) (uint8, or float in [0, 1]) -> model input (3, S, S).
        Unreadable files raise `ImageReadError`."""
        if isinstance(item, (str, Path)):
            item = load_rgb(item)  # its shape checked as it opened
        else:
            item = to_pil_image(item) if isinstance(item, torch.Tensor) else item
            check_aspect(item.size, "an image given in memory")
        return transform(to_rgb(item))

    @staticmethod
    def is_single(items: Any) -> bool:
        return isinstance(items, (str, Path, Image.Image)) or (isinstance(items, torch.Tensor) and items.dim() == 3)

    @staticmethod
    def find(spec: str | Sequence[str]) -> list[Path]:
        """A file, a folder (every non-hidden file, sorted; not filtered by extension), a glob, or a list."""
        return [p for p in expand(spec, lambda folder: sorted(p for p in folder.iterdir()
                                                              if p.is_file() and not p.name.startswith(".")))
                if p.is_file() or not p.exists()]


class ClipInputs:
    """Inputs are clips: `frames` frames sampled uniformly (T, C, S, S) with a mask (T,)."""
    kind = "clip"
    check = staticmethod(check_clip)
    collate = staticmethod(collate_captioned_clips)
    stack = staticmethod(stack_clips)

    def __init__(self, frames: int, keep_in_memory: bool = False):
        self.frames, self.keep_in_memory = int(frames), bool(keep_in_memory)
        self.checkpoint_extras = {"frames": self.frames}

    def loader(self, records: list, transform: Transform, **image_options) -> ClipLoader:
        return ClipLoader(records, self.frames, transform, keep=self.keep_in_memory)

    def read(self, item: str | Path, transform: Transform) -> tuple[torch.Tensor, torch.Tensor]:
        """A frame folder or video file -> frames (T, C, S, S), mask (T,). Unreadable clips raise `ClipReadError`."""
        return load_clip(item, self.frames, transform)

    @staticmethod
    def is_single(items: Any) -> bool:
        return isinstance(items, (str, Path))

    @staticmethod
    def find(spec: str | Sequence[str]) -> list[Path]:
        """A video file, a frame folder, a folder of clips (each sub-folder or file is one clip), a glob, or a list."""
        return expand(spec, lambda folder: [folder] if frame_files(folder) else
                      sorted(p for p in folder.iterdir() if not p.name.startswith(".")))


def inputs_for(frames: int | None, keep_in_memory: bool = False) -> ImageInputs | ClipInputs:
    """Clips when a frame count is given (a clip task's data config, a clip checkpoint), else images."""
    return ClipInputs(frames, keep_in_memory) if frames else ImageInputs()
