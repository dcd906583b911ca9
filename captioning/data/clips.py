"""Clips: frame folders or video files, read into `T` uniformly sampled frames plus a padding mask.

A clip is either a folder of image files (frames in natural name order: frame_2 before frame_10)
or a video file decoded with PyAV. `load_clip` samples `T` frames spread evenly over the clip
(the centre of each of T equal segments); a clip with fewer frames keeps them all, and the
rest is zero padding marked False in the mask, so padding is always at the end.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from captioning.data.images import ImageReadError, load_rgb

FRAME_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


class ClipReadError(ImageReadError):
    """A clip that is missing, empty, or holds an unreadable frame or video stream."""


@dataclass
class ClipRecord:
    """One clip with its activity label and/or its captions."""
    clip_id: int | str
    path: Path
    split: str
    label: str | None = None
    captions: list[str] = field(default_factory=list)

    # The caption-record helpers (`clean_captions`, evaluation) name records by these two.
    @property
    def image_id(self) -> int | str:
        return self.clip_id

    @property
    def image_path(self) -> Path:
        return self.path


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path.name)]


def frame_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS and not p.name.startswith(".")),
                  key=_natural_key)


def sample_indices(num_frames: int, T: int) -> list[int]:
    """`min(num_frames, T)` frame indices: the centre of each of T equal segments, in order."""
    if num_frames <= T:
        return list(range(num_frames))
    return [int((i + 0.5) * num_frames / T) for i in range(T)]


def _video_frames(path: Path, T: int) -> list[Image.Image]:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipReadError(f"{path}: no video stream")
            count = container.streams.video[0].frames
            if count <= 0:  # the container does not say: count by decoding once
                count = sum(1 for _ in container.decode(video=0))
                container.seek(0)
            wanted = set(sample_indices(count, T))
            frames = [frame.to_image() for index, frame in enumerate(container.decode(video=0)) if index in wanted]
    except ClipReadError:
        raise
    except Exception as error:  # PyAV raises its own error types per codec and container problem
        raise ClipReadError(f"{path}: not a readable video ({type(error).__name__}: {error})") from error
    return [frame.convert("RGB") for frame in frames]


def read_frames(path: str | Path, T: int) -> list[Image.Image]:
    """Up to T RGB frames of a clip (frame folder or video file), sampled uniformly."""
    path = Path(path)
    if path.is_dir():
        files = frame_files(path)
        if not files:
            raise ClipReadError(f"{path}: clip folder has no frames ({', '.join(sorted(FRAME_EXTENSIONS))})")
        try:
            frames = [load_rgb(files[i]) for i in sample_indices(len(files), T)]
        except ImageReadError as error:
            raise ClipReadError(f"clip {path}: {error}") from error
    elif path.is_file():
        frames = _video_frames(path, T)
    else:
        raise ClipReadError(f"{path}: clip not found (neither a frame folder nor a video file)")
    if not frames:
        raise ClipReadError(f"{path}: clip has no frames")
    return frames


def to_tensors(images: list[Image.Image], T: int,
               transform: Callable[[Image.Image], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to T frames -> frames (T, C, H, W) zero-padded at the end, mask (T,) True for real frames."""
    frames = [transform(image) for image in images]
    padded = torch.zeros(T, *frames[0].shape)
    padded[: len(frames)] = torch.stack(frames)
    return padded, torch.arange(T) < len(frames)


def load_clip(path: str | Path, T: int,
              transform: Callable[[Image.Image], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """-> frames (T, C, H, W) zero-padded at the end, mask (T,) True for real frames."""
    return to_tensors(read_frames(path, T), T, transform)


def check_clip(path: str | Path, full: bool = True) -> str | None:
    """A message if the clip cannot be read, else None. `full=False` only checks it exists and has frames."""
    path = Path(path)
    try:
        if full:
            read_frames(path, T=1 << 30)  # every frame decoded
        elif path.is_dir():
            if not frame_files(path):
                raise ClipReadError(f"{path}: clip folder has no frames")
        elif not path.is_file():
            raise ClipReadError(f"{path}: clip not found (neither a frame folder nor a video file)")
    except ImageReadError as error:
        return str(error)
    return None


class ClipLoader:
    """`index -> (frames (T, C, H, W), mask (T,))` for a list of clip records.

    `keep=True` holds each clip's decoded frames (8-bit) in memory after its first read: for small
    data sets, where decoding thousands of frame files every epoch costs more than training on them.
    """

    def __init__(self, records: list[ClipRecord], T: int, transform: Callable[[Image.Image], torch.Tensor],
                 keep: bool = False):
        self.paths = [record.path for record in records]
        self.T, self.transform = T, transform
        self.kept: dict[int, list[Image.Image]] | None = {} if keep else None

    def __call__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kept is None:
            return load_clip(self.paths[index], self.T, self.transform)
        if index not in self.kept:
            self.kept[index] = read_frames(self.paths[index], self.T)
        return to_tensors(self.kept[index], self.T, self.transform)
