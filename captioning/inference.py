"""Captioning images with a trained checkpoint: `Captioner.from_checkpoint(path).caption(images)`."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from PIL import Image
from torchvision.transforms.functional import to_pil_image

from captioning.checkpoint import load_checkpoint, load_state
from captioning.data.dataset import build_transform
from captioning.data.images import load_rgb, to_rgb
from captioning.decoding import beam_search
from captioning.models.captioner import CaptionModel, build_model
from captioning.vocab import Vocabulary

ImageLike = str | Path | Image.Image | torch.Tensor


@dataclass
class Caption:
    caption: str
    score: float  # summed log-prob divided by the length penalty (higher is better)
    alternatives: list[dict] = field(default_factory=list)  # runners-up, best first: {"caption", "score"}


def resolve_device(name: str | torch.device) -> torch.device:
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={str(name)!r} but CUDA is not available here")
    return device


class Captioner:
    """A model, its vocabulary and its preprocessing, everything read from one checkpoint.

    Decoding options (keyword arguments of `caption` and `decode_features`): beam_size, n_best,
    max_length (words, `<end>` not counted; None: the training cap), min_length (words),
    length_penalty ("none" | "avg" | "gnmt"), alpha (GNMT exponent), forbid_unk.
    """

    def __init__(self, model: CaptionModel, vocab: Vocabulary, preprocess: dict, max_length: int,
                 device: str | torch.device = "cpu"):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.preprocess = preprocess
        self.max_length = max_length
        self.transform = build_transform(preprocess)

    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str | torch.device = "auto") -> "Captioner":
        payload = load_checkpoint(path)
        vocab = Vocabulary(payload["vocab"])
        model = build_model(payload["model_config"], len(vocab), pretrained=False)
        load_state(model, payload["model"], path)
        return cls(model, vocab, payload["preprocess"], int(payload.get("max_length", 20)), device)

    def to_input(self, image: ImageLike) -> torch.Tensor:
        """A path, a PIL image, or an image tensor (3, H, W) (uint8, or float in [0, 1]) -> model input (3, S, S)."""
        if isinstance(image, (str, Path)):
            image = load_rgb(image)
        elif isinstance(image, torch.Tensor):
            image = to_pil_image(image)
        return self.transform(to_rgb(image))

    @torch.no_grad()
    def encode(self, inputs: torch.Tensor) -> torch.Tensor:
        """Preprocessed images (B, 3, S, S) -> features (B, D)."""
        return self.model.encoder(inputs.to(self.device)).float()

    @torch.no_grad()
    def decode_features(self, features: torch.Tensor, *, beam_size: int = 3, n_best: int = 1,
                        max_length: int | None = None, min_length: int = 0, length_penalty: str = "none",
                        alpha: float = 0.7, forbid_unk: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Features (B, D), e.g. cached ones -> tokens (B, n_best, T), scores (B, n_best)."""
        decoder = self.model.decoder
        words = self.max_length if max_length is None else max_length
        return beam_search(decoder.step, decoder.init_state(features.to(self.device).float()),
                           start=self.vocab.start, end=self.vocab.end, beam_size=beam_size,
                           max_length=words + 1, min_length=min_length, length_penalty=length_penalty,
                           alpha=alpha, n_best=n_best, forbid=(self.vocab.unk,) if forbid_unk else ())

    def to_captions(self, tokens: torch.Tensor, scores: torch.Tensor) -> list[Caption]:
        """tokens (B, n_best, T), scores (B, n_best) -> one Caption per image."""
        captions = []
        for rows, row_scores in zip(tokens.tolist(), scores.tolist()):
            ranked = [{"caption": self.vocab.decode(row), "score": score}
                      for row, score in zip(rows, row_scores) if score > float("-inf")]
            captions.append(Caption(ranked[0]["caption"], ranked[0]["score"], ranked[1:]))
        return captions

    def caption(self, images: ImageLike | Sequence[ImageLike], *, batch_size: int = 32, **decode) -> Caption | list[Caption]:
        """Caption one image or a list of them (paths, PIL images, image tensors (3, H, W) or (B, 3, H, W)).

        One image gives one Caption, a list gives a list. Unreadable files raise `ImageReadError`.
        """
        single = isinstance(images, (str, Path, Image.Image)) or (isinstance(images, torch.Tensor) and images.dim() == 3)
        items = [images] if single else list(images)
        captions = []
        for first in range(0, len(items), batch_size):
            inputs = torch.stack([self.to_input(image) for image in items[first:first + batch_size]])
            captions += self.to_captions(*self.decode_features(self.encode(inputs), **decode))
        return captions[0] if single else captions

