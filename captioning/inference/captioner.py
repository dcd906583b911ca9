"""Captioning images or clips with a trained checkpoint: `Captioner.from_checkpoint(path).caption(items)`."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from tqdm import tqdm

from captioning.checkpoint import CheckpointError, load_checkpoint, load_state
from captioning.config import MAX_CAPTION_WORDS, OptionError
from captioning.data.batches import Features
from captioning.data.feature_rows import StoreRows
from captioning.data.images import check_preprocess
from captioning.data.inputs import ClipInputs, ImageInputs, inputs_for
from captioning.data.transforms import build_transform
from captioning.decoding import beam_search, diverse_beam_search, sample
from captioning.execution import resolve_device
from captioning.inference.ensemble import EnsembleModel, check_members
from captioning.models.caption_model import (
    CaptionModel,
    build_caption_model,
    build_from_file,
    check_model_spec,
)
from captioning.registry import SpecError
from captioning.vocab import Vocabulary


@dataclass
class Caption:
    caption: str
    score: float  # summed log-prob divided by the length penalty (higher is better)
    alternatives: list[dict] = field(default_factory=list)  # runners-up, best first: {"caption", "score"}
    # With return_attention (attention decoders): per word of `caption`, its weights over the grid's cells,
    # row-major over `grid` = [rows, columns].
    attention: list[list[float]] | None = None
    grid: list[int] | None = None


def check_caption_payload(payload: dict) -> Vocabulary:
    """What a caption checkpoint must hold to be rebuilt: a valid vocabulary, a model spec of registered
    parts, an integer frame count for clips. Raises SpecError/ValueError naming the key."""
    if not isinstance(payload.get("vocab"), list) or not all(isinstance(w, str) for w in payload["vocab"]):
        raise ValueError(f"vocab: a {payload['task']!r} checkpoint has no word list, so it writes no captions")
    try:
        vocab = Vocabulary(payload["vocab"])
    except ValueError as error:
        raise ValueError(f"vocab: {error}") from None
    frames = payload.get("frames")
    if frames is not None and (not isinstance(frames, int) or isinstance(frames, bool) or frames < 1):
        raise ValueError(f"frames: expected a positive integer, found {frames!r}")
    parts = ("encoder", "temporal", "decoder") if frames is not None else ("encoder", "decoder")
    check_model_spec(payload["model_spec"], parts, "model_spec")
    max_words = payload.get("max_words", 20)
    if not isinstance(max_words, int) or isinstance(max_words, bool) or not 1 <= max_words <= MAX_CAPTION_WORDS:
        raise ValueError(f"max_words: expected an integer in 1..{MAX_CAPTION_WORDS}, found {max_words!r}")
    problem = check_preprocess(payload["preprocess"]) if payload["preprocess"] is not None else None  # None: regions
    if problem:
        raise ValueError(problem)
    return vocab


def check_decode_limits(decode: dict, max_words: int, where: str) -> None:
    """decode.min_words within the cap actually in force: decode.max_words, or (null) the checkpoint's max_words."""
    if decode.get("max_words") is None and decode.get("min_words", 0) > max_words:
        raise OptionError(f"decode.min_words={decode['min_words']}: expected an integer in 0..{max_words} (the "
                          f"max_words of {where}, in force while decode.max_words=null)")


class Captioner:
    """A model, its vocabulary, its preprocessing and its input kind (images or clips), all read from one checkpoint.

    Decoding options (keyword arguments of `caption` and `decode`, as in conf/decode/default.yaml): beam_size,
    n_best, max_words (`<end>` not counted; None: the training cap), min_words, length_penalty ("none" | "avg" |
    "gnmt"), alpha (GNMT exponent), forbid_unk, block_ngram_repeat, diversity_groups and diversity_strength
    (diverse beam search), top_p, temperature and seed (nucleus sampling of n_best captions instead of a search).
    """

    def __init__(self, model: CaptionModel, vocab: Vocabulary, preprocess: dict, max_words: int,
                 device: str | torch.device = "cpu", inputs: ImageInputs | ClipInputs | None = None):
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.vocab = vocab
        self.preprocess = preprocess
        self.max_words = max_words
        self.inputs = inputs or ImageInputs()
        self.transform = build_transform(preprocess) if preprocess is not None else None  # None: precomputed regions

    @classmethod
    def from_checkpoint(cls, path: str | Path | Sequence[str | Path], device: str | torch.device = "auto",
                        allow_hub_model: str | None = None) -> "Captioner":
        """One checkpoint, or a list of them: an ensemble (inference/ensemble.py) that decodes with the mean of the
        members' log-probabilities. Members must share the vocabulary and the preprocessing; max_words is the first's.
        A hub or URL encoder named by a checkpoint is refused unless it is `allow_hub_model` (the user's choice)."""
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        if not paths:
            raise CheckpointError("checkpoint: an empty list; give one checkpoint, or several for an ensemble")
        return cls.from_payloads([(load_checkpoint(p), p) for p in paths], device, allow_hub_model)

    @classmethod
    def from_payloads(cls, loaded: list[tuple[dict, str | Path]], device: str | torch.device = "auto",
                      allow_hub_model: str | None = None) -> "Captioner":
        """Checkpoints already read by `load_checkpoint`, with their paths: one captioner, or an ensemble of them."""
        if len(loaded) == 1:
            return cls.from_payload(*loaded[0], device, allow_hub_model)
        members = [(cls.from_payload(payload, path, "cpu", allow_hub_model), path) for payload, path in loaded]
        try:
            check_members(members)
        except ValueError as error:
            raise CheckpointError(str(error)) from None
        first = members[0][0]
        return cls(EnsembleModel([captioner.model for captioner, _ in members]), first.vocab, first.preprocess,
                   first.max_words, device, first.inputs)

    @classmethod
    def from_payload(cls, payload: dict, path: str | Path, device: str | torch.device = "auto",
                     allow_hub_model: str | None = None) -> "Captioner":
        """A checkpoint already read by `load_checkpoint` (from `path`, named in errors)."""
        try:
            vocab = check_caption_payload(payload)
            model = build_from_file(
                lambda: build_caption_model(payload["model_spec"], len(vocab), pretrained=False, where="model_spec"),
                payload["model_spec"], payload["model"], allow_hub_model)
        except (SpecError, ValueError) as error:
            raise CheckpointError(f"{path}: {error}") from None
        load_state(model, payload["model"], path)
        return cls(model, vocab, payload["preprocess"], int(payload.get("max_words", 20)), device,
                   inputs_for(payload.get("frames")))

    def read(self, item: Any) -> Any:
        """One image (path, PIL image, tensor) or clip (frame folder, video file) -> model input."""
        if self.transform is None:
            raise OptionError("this model reads precomputed region features and has no image encoder: it captions "
                              "the images of a region store (evaluate.py data.features=STORE), not image files")
        return self.inputs.read(item, self.transform)

    @torch.no_grad()
    def encode(self, batch: Any) -> Any:
        """A batch of model inputs (images (B, 3, S, S) or Clips) -> the decoder's memory."""
        return self.model.encoder(batch.to(self.device)).float()

    @torch.no_grad()
    def decode(self, memory: Any, *, beam_size: int = 3, n_best: int = 1, max_words: int | None = None,
               min_words: int = 0, length_penalty: str = "none", alpha: float = 0.7,
               forbid_unk: bool = False, block_ngram_repeat: int = 0, diversity_groups: int = 1,
               diversity_strength: float = 0.5, top_p: float | None = None, temperature: float = 1.0,
               seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory (from `encode`) -> tokens (B, n_best, T), scores (B, n_best), best first."""
        common = dict(start=self.vocab.start, end=self.vocab.end,
                      max_tokens=(self.max_words if max_words is None else max_words) + 1)
        forbid = (self.vocab.unk,) if forbid_unk else ()
        if top_p is not None:  # n_best samples per image, ranked by the model's log-prob (no length penalty)
            generator = torch.Generator(self.device).manual_seed(seed)
            tokens, scores = sample(self.model.decoder, memory, **common, temperature=temperature, top_p=top_p,
                                    samples=n_best, forbid=forbid, generator=generator)
            scores, order = scores.view(-1, n_best).sort(dim=1, descending=True)
            tokens = tokens.view(len(scores), n_best, -1)
            return tokens.gather(1, order.unsqueeze(2).expand_as(tokens)), scores
        search = dict(beam_size=beam_size, min_words=min_words, length_penalty=length_penalty, alpha=alpha,
                      n_best=n_best, forbid=forbid, block_ngram_repeat=block_ngram_repeat, **common)
        if diversity_groups > 1:
            return diverse_beam_search(self.model.decoder, memory, groups=diversity_groups,
                                       strength=diversity_strength, **search)
        return beam_search(self.model.decoder, memory, **search)

    def decode_features(self, features: torch.Tensor | Features, **decode) -> tuple[torch.Tensor, torch.Tensor]:
        """Cached image features (B, D) (or Features) -> tokens (B, n_best, T), scores (B, n_best)."""
        return self.decode(self.model.encoder.from_cached(features).to(self.device).float(), **decode)

    def to_captions(self, tokens: torch.Tensor, scores: torch.Tensor) -> list[Caption]:
        """tokens (B, n_best, T), scores (B, n_best) -> one Caption per input."""
        captions = []
        for rows, row_scores in zip(tokens.tolist(), scores.tolist(), strict=True):
            ranked = [{"caption": self.vocab.decode(row), "score": score}
                      for row, score in zip(rows, row_scores, strict=True) if score > float("-inf")]
            captions.append(Caption(ranked[0]["caption"], ranked[0]["score"], ranked[1:]))
        return captions

    def caption_inputs(self, inputs: list, *, return_attention: bool = False, **decode) -> list[Caption]:
        """Already-read model inputs (from `read`) -> one Caption each (with attention weights: `caption`)."""
        memory = self.encode(self.inputs.stack(inputs))
        tokens, scores = self.decode(memory, **decode)
        captions = self.to_captions(tokens, scores)
        if return_attention:
            for caption, weights in zip(captions, self.attention(memory, tokens[:, 0]), strict=True):
                caption.attention = [[round(float(w), 5) for w in row] for row in weights]
                caption.grid = grid_shape(weights.size(1))
        return captions

    def has_attention(self) -> bool:
        return hasattr(self.model.decoder, "attention_weights")

    def no_attention_reason(self) -> str:
        """Why `has_attention()` is False, for the refusal of return_attention / attention_maps."""
        if isinstance(self.model, EnsembleModel):
            return (f"an ensemble of {len(self.model.encoder.members)} checkpoints has no single attention map (each "
                    "member attends on its own); give one checkpoint")
        return (f"this checkpoint's decoder attends over no grid ({type(self.model.decoder).__name__}; attention "
                "decoders: model/decoder=soft_attention, updown or transformer)")

    @torch.no_grad()
    def attention(self, memory: Any, tokens: torch.Tensor) -> list[torch.Tensor]:
        """Captions `tokens` (B, T) (no `<start>`, ending with `<end>`) -> per caption (words, N): where each of its
        words looked. The decoder reruns each caption word by word, so the weights are those decoding produced."""
        if not self.has_attention():
            raise OptionError(f"return_attention: {self.no_attention_reason()}")
        start = torch.full_like(tokens[:, :1], self.vocab.start)
        weights = self.model.decoder.attention_weights(memory, torch.cat([start, tokens], dim=1))  # (B, T, N)
        lengths = [len(self.vocab.decode_tokens(row)) for row in tokens.tolist()]
        return [w[:n].float().cpu() for w, n in zip(weights, lengths, strict=True)]

    def caption_rows(self, rows: StoreRows, *, batch_size: int = 32, **decode) -> list[Caption]:
        """One Caption per record of a feature store's `rows` (`FeatureStore.reader`), read a batch at a time."""
        captions = []
        for first in progress(range(0, len(rows), batch_size), "captioning store rows"):
            batch = rows.read(torch.arange(first, min(first + batch_size, len(rows))))
            captions += self.to_captions(*self.decode_features(batch, **decode))
        return captions

    def caption(self, items: Any | Sequence[Any], *, batch_size: int = 32, return_attention: bool = False,
                **decode) -> Caption | list[Caption]:
        """Caption one input or a list of them: images (paths, PIL images, tensors (3, H, W) or (B, 3, H, W)) for an
        image captioner, clips (frame folders, video files) for a clip captioner. One gives one Caption, a list a list.
        Unreadable files raise `ImageReadError` (clips: `ClipReadError`). `return_attention` (attention decoders):
        each Caption also holds, per word, its attention weights over the grid (`Caption.attention`, `.grid`)."""
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise OptionError(f"batch_size: expected an integer >= 1, found {batch_size!r}")
        single = self.inputs.is_single(items)
        items = [items] if single else list(items)
        captions = []
        for first in progress(range(0, len(items), batch_size), f"captioning {self.inputs.kind}s"):
            captions += self.caption_inputs([self.read(item) for item in items[first:first + batch_size]],
                                            return_attention=return_attention, **decode)
        return captions[0] if single else captions


def progress(batches: range, desc: str) -> Iterable[int]:
    """Batch starts, with a progress bar on stderr when there are several batches (a split of 5,000 images)."""
    return tqdm(batches, desc=desc, leave=False, dynamic_ncols=True, disable=len(batches) < 2)


def grid_shape(cells: int) -> list[int]:
    """[rows, columns] of a square grid of `cells` cells (every encoder here takes square inputs)."""
    side = math.isqrt(cells)
    if side * side != cells:
        raise ValueError(f"a grid of {cells} cells is not square; its layout is unknown")
    return [side, side]
