"""Encoder + decoder as one module, and rebuilding models from a spec of registered names and plain arguments.

A model spec is what `conf/model` composes and what a checkpoint stores:
`{"encoder": {"name": "tiny_cnn", ...}, "decoder": {"name": "lstm", ...}}`, plus `temporal` for clips
and `classifier` for activities. Every part is checked against its registry before anything is built,
so a spec read from a file can only choose the project's own components.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from captioning.decoding import sample_with_log_probs
from captioning.models.decoders import DECODERS, CaptionDecoder
from captioning.models.decoders.base import scheduled_sampling_loss
from captioning.models.encoders import ENCODERS, ImageEncoder
from captioning.models.heads import HEADS, ActivityHead, ActivityModel
from captioning.models.temporal import TEMPORAL, ClipCaptionDecoder, TimeDistributed
from captioning.registry import Registry, SpecError

PARTS: dict[str, Registry] = {"encoder": ENCODERS, "decoder": DECODERS, "temporal": TEMPORAL, "classifier": HEADS}
# The constructor arguments each part gets from the others rather than from the spec.
SUPPLIED = {"encoder": (), "decoder": ("vocab_size", "feature_dim", "grid_dim"), "temporal": ("input_dim",),
            "classifier": ("in_dim", "num_classes")}


class CaptionModel(nn.Module):
    """`forward(inputs, tokens) -> (summed loss, count)`, so DDP wraps this one module."""

    def __init__(self, encoder: ImageEncoder | TimeDistributed, decoder: CaptionDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def memory(self, inputs: Any, cached: bool = False) -> Any:
        """Images (B, 3, H, W) or clips through the encoder, or, when `cached`, their stored features as they are."""
        return self.encoder.from_cached(inputs) if cached else self.encoder(inputs)

    def forward(self, inputs: Any, tokens: torch.Tensor, cached: bool = False, sample: dict | None = None,
                sampling_prob: float = 0.0, label_smoothing: float = 0.0) -> Any:
        """Teacher-forced cross-entropy summed over the real next-word targets of tokens (B, T), and their number
        (with `sampling_prob` > 0: scheduled sampling; `label_smoothing` > 0: against smoothed targets, the
        validation loss never is); with `sample` (self-critical training), K captions per image
        drawn with their log-probabilities instead (`decoding.sample_with_log_probs` arguments), so DDP sees the
        sampling pass as this module's forward."""
        memory = self.memory(inputs, cached)
        if sample is not None:
            return sample_with_log_probs(self.decoder, memory, **sample)
        if sampling_prob > 0:
            return scheduled_sampling_loss(self.decoder, memory, tokens, sampling_prob, label_smoothing=label_smoothing)
        if label_smoothing > 0:  # only then: a decoder whose own `loss` predates the option still trains without it
            return self.decoder.loss(memory, tokens, label_smoothing=label_smoothing)
        return self.decoder.loss(memory, tokens)

    def parts(self) -> dict[str, nn.Module]:
        """The named parts another model can take over (`train.init_from`): encoder, decoder (and temporal for clips)."""
        return {**parts_of(self.encoder, "encoder"), **parts_of(self.decoder, "decoder")}


def parts_of(module: nn.Module, name: str) -> dict[str, nn.Module]:
    return module.parts() if hasattr(module, "parts") else {name: module}


def check_model_spec(spec: Any, parts: tuple[str, ...], where: str = "model") -> dict:
    """Refuse a spec with missing or extra parts, unregistered names, unknown arguments or non-plain values."""
    if not isinstance(spec, dict):
        raise SpecError(f"{where}: expected a mapping of parts {parts}, found {type(spec).__name__}")
    extra = sorted(set(spec) - set(parts))
    if extra:
        raise SpecError(f"{where}.{extra[0]}: not a part of this model (it has {', '.join(parts)})")
    for part in parts:
        if part not in spec:
            raise SpecError(f"{where}.{part}: missing")
        PARTS[part].check(spec[part], f"{where}.{part}", SUPPLIED[part])
    return spec


def check_nothing_fetched(spec: Any, where: str, allowed: str | None = None) -> None:
    """A model spec read from a file (checkpoint, captioner.json) may not name a hub, URL or folder model: nothing a
    file names is fetched. Registry names (timm's, torchvision's) hold no ':' or '/'; `hf-hub:org/model`,
    `local-dir:/path` and URLs do, and timm fetches their config even with pretrained=False. `allowed`: the one
    such name the user gave on the command line (`allow_hub_model=`)."""
    encoder = spec.get("encoder") if isinstance(spec, dict) else None
    name = encoder.get("model") if isinstance(encoder, dict) else None
    if isinstance(name, str) and name != allowed and any(mark in name for mark in (":", "/", "\\")):
        raise SpecError(f"{where}.encoder.model={name!r}: a hub, URL or folder model named by a file; nothing a file "
                        f"names is fetched (to fetch it, give allow_hub_model='{name}' on the command line)")


def check_spec_fits_weights(build: Callable[[], nn.Module], state_dict: dict, where: str = "model_spec") -> None:
    """Build a model spec read from a file on the meta device (no memory) and refuse it unless its tensors are the
    checkpoint's, name for name and shape for shape: a crafted `hidden_size` of a billion is refused before anything
    is allocated, and the model built next is no larger than the weights the file holds."""
    if not isinstance(state_dict, dict):
        raise SpecError(f"{where}: the checkpoint's weights are a {type(state_dict).__name__}, not a dict of tensors")
    with torch.device("meta"):
        skeleton = build()
    expected = {name: tuple(value.shape) for name, value in skeleton.state_dict().items()}
    given = {name: tuple(value.shape) for name, value in state_dict.items() if torch.is_tensor(value)}
    if expected == given:
        return
    wrong = [f"{name} {expected[name]} where the weights are {given[name]}" for name in expected
             if name in given and expected[name] != given[name]]
    missing, extra = sorted(set(expected) - set(given)), sorted(set(given) - set(expected))
    problem = (wrong[0] if wrong else f"{missing[0]} has no weights" if missing else f"weights {extra[0]} fit no tensor")
    raise SpecError(f"{where}: builds a model that does not fit the checkpoint's weights ({problem}; "
                    f"{len(wrong) + len(missing) + len(extra)} tensors differ)")


def build_from_file(build: Callable[[], nn.Module], spec: Any, state_dict: dict, allow_hub_model: str | None = None,
                    where: str = "model_spec") -> nn.Module:
    """A model whose spec and weights come from a file: refused when the spec names a model to fetch that the user
    did not allow, or builds something other than the weights; built only then."""
    check_nothing_fetched(spec, where, allow_hub_model)
    check_spec_fits_weights(build, state_dict, where)
    return build()


def build_encoder(spec: dict, pretrained: bool, where: str = "model.encoder") -> ImageEncoder:
    """`pretrained=False` builds the architecture only: a checkpoint's weights are loaded next."""
    return ENCODERS.build(spec if pretrained else {**spec, "pretrained": False}, where)


def build_caption_model(spec: dict, vocab_size: int, pretrained: bool = True, where: str = "model") -> CaptionModel:
    """An image captioner ({encoder, decoder}) or a clip captioner ({encoder, temporal, decoder})."""
    clips = isinstance(spec, dict) and "temporal" in spec
    check_model_spec(spec, ("encoder", "temporal", "decoder") if clips else ("encoder", "decoder"), where)
    encoder = build_encoder(spec["encoder"], pretrained, f"{where}.encoder")
    if not clips:
        decoder = DECODERS.build(spec["decoder"], f"{where}.decoder", **decoder_sizes(spec["decoder"], vocab_size,
                                                                                       encoder.out_dim, encoder.grid_dim))
        return CaptionModel(encoder, decoder)
    temporal = TEMPORAL.build(spec["temporal"], f"{where}.temporal", input_dim=encoder.out_dim)
    decoder = DECODERS.build(spec["decoder"], f"{where}.decoder", **decoder_sizes(spec["decoder"], vocab_size,
                                                                                   temporal.out_dim, None))
    return CaptionModel(TimeDistributed(encoder), ClipCaptionDecoder(temporal, decoder))


def decoder_sizes(spec: dict, vocab_size: int, feature_dim: int, grid_dim: int | None) -> dict:
    """The sizes a decoder gets from the model around it; `grid_dim` only for decoders that read grids."""
    sizes = {"vocab_size": vocab_size, "feature_dim": feature_dim}
    if getattr(DECODERS.get(spec["name"]), "uses_grid", False):
        if grid_dim is None:
            raise SpecError(f"decoder {spec['name']!r} reads a feature grid, which this encoder does not give")
        sizes["grid_dim"] = grid_dim
    return sizes


def build_activity_model(spec: dict, num_classes: int, pretrained: bool = True, where: str = "model") -> ActivityModel:
    """An LRCN activity classifier from {encoder, temporal, classifier}."""
    check_model_spec(spec, ("encoder", "temporal", "classifier"), where)
    encoder = TimeDistributed(build_encoder(spec["encoder"], pretrained, f"{where}.encoder"))
    temporal = TEMPORAL.build(spec["temporal"], f"{where}.temporal", input_dim=encoder.out_dim)
    classifier = HEADS.build(spec["classifier"], f"{where}.classifier", in_dim=temporal.out_dim, num_classes=num_classes)
    return ActivityModel(encoder, ActivityHead(temporal, classifier))
