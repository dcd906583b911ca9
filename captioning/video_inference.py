"""Captioning clips with a `task=video_caption` checkpoint: `VideoCaptioner.from_checkpoint(path).caption(clips)`.

`VideoCaptioner` is a `Captioner` whose inputs are clips (frame folders or video files): encoding,
beam search and the result format are the image captioner's, unchanged.
"""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Sequence

import torch
from omegaconf import DictConfig, OmegaConf

from captioning.caption import GLOB_CHARACTERS, caption_paths
from captioning.checkpoint import CheckpointError, load_checkpoint, load_state
from captioning.data.clip_dataset import stack_clips
from captioning.data.clips import frame_files, load_clip
from captioning.inference import Caption, Captioner
from captioning.models.video import build_video_caption_model
from captioning.vocab import Vocabulary


class VideoCaptioner(Captioner):
    """A clip captioner read from one checkpoint: model, vocabulary, frame preprocessing and frames per clip."""

    def __init__(self, model, vocab: Vocabulary, preprocess: dict, max_length: int, frames: int,
                 device: str | torch.device = "cpu"):
        super().__init__(model, vocab, preprocess, max_length, device)
        self.frames = frames

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto") -> "VideoCaptioner":
        payload = load_checkpoint(path)
        if payload.get("task") != "video_caption":
            task = payload.get("task", "image_caption")
            raise CheckpointError(f"{path}: not a video description checkpoint (task={task!r}); "
                                  "train one with `scripts/train.py task=video_caption`")
        vocab = Vocabulary(payload["vocab"])
        model = build_video_caption_model(payload["model_config"], len(vocab), pretrained=False)
        load_state(model, payload["model"], path)
        return cls(model, vocab, payload["preprocess"], int(payload["max_length"]), int(payload["frames"]), device)

    def to_input(self, clip: str | Path) -> tuple[torch.Tensor, torch.Tensor]:
        """A frame folder or video file -> frames (T, C, S, S), mask (T,). Unreadable clips raise `ClipReadError`."""
        return load_clip(clip, self.frames, self.transform)

    def caption(self, clips: str | Path | Sequence[str | Path], *, batch_size: int = 8, **decode) -> Caption | list[Caption]:
        """Caption one clip or a list of them; decoding options as in `Captioner.decode_features`."""
        single = isinstance(clips, (str, Path))
        items = [clips] if single else list(clips)
        captions = []
        for first in range(0, len(items), batch_size):
            batch = stack_clips([self.to_input(clip) for clip in items[first:first + batch_size]])
            captions += self.to_captions(*self.decode_features(self.encode(batch), **decode))
        return captions[0] if single else captions


def find_clips(spec: str | Sequence[str]) -> list[Path]:
    """A video file, a frame folder, a folder of clips (each sub-folder or file is one clip), a glob, or a list."""
    if not isinstance(spec, str):
        return [path for item in spec for path in find_clips(str(item))]
    if GLOB_CHARACTERS & set(spec):
        return sorted(Path(p) for p in glob.glob(str(Path(spec).expanduser()))) or [Path(spec)]  # no match: reported
    path = Path(spec).expanduser()
    if path.is_dir() and not frame_files(path):
        return sorted(p for p in path.iterdir() if not p.name.startswith("."))
    return [path]


def caption_clips(cfg: DictConfig) -> list[dict]:
    """`conf/caption.yaml` for a video description checkpoint: `images=` names clips."""
    captioner = VideoCaptioner.from_checkpoint(cfg.checkpoint, device=cfg.device)
    decode = OmegaConf.to_container(cfg.decode, resolve=True)
    clips = OmegaConf.to_container(cfg.images) if OmegaConf.is_list(cfg.images) else str(cfg.images)
    return caption_paths(find_clips(clips), captioner.to_input,
                         lambda batch: captioner.to_captions(*captioner.decode_features(captioner.encode(
                             stack_clips(batch)), **decode)),
                         batch_size=cfg.batch_size, output=cfg.output, kind="clip")
