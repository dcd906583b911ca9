"""Checkpoint ensembles: every member encodes the input its own way, the members decode in lockstep, and the
searches run over the mean of their next-word log-probabilities (as ruotianluo's AttEnsemble). Members may have
different decoders (pooled, attention) and encoders, but must share the vocabulary and the preprocessing."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn


class EnsembleMemory:
    """The members' memories of one batch, one per member; `len` and `device` as the decoding functions need."""

    def __init__(self, members: list[Any]):
        self.members = members

    def __len__(self) -> int:
        return len(self.members[0])

    @property
    def device(self) -> torch.device:
        return self.members[0].device

    def float(self) -> "EnsembleMemory":
        return EnsembleMemory([memory.float() for memory in self.members])

    def to(self, device: torch.device | str) -> "EnsembleMemory":
        return EnsembleMemory([memory.to(device) for memory in self.members])


class EnsembleEncoder(nn.Module):
    def __init__(self, encoders: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(encoders)

    def forward(self, inputs: Any) -> EnsembleMemory:
        return EnsembleMemory([encoder(inputs) for encoder in self.members])

    def from_cached(self, features: Any) -> EnsembleMemory:
        """Cached features stand for every member's encoder output, so the members must share one frozen encoder."""
        return EnsembleMemory([encoder.from_cached(features) for encoder in self.members])


class EnsembleDecoder(nn.Module):
    """The decoder contract over the members: the state is the tuple of their states, each reordered by its own
    decoder, and a step's log-probs are the mean of theirs."""

    def __init__(self, decoders: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(decoders)

    def init_state(self, memory: EnsembleMemory) -> tuple:
        return tuple(decoder.init_state(part) for decoder, part in zip(self.members, memory.members, strict=True))

    def step(self, tokens: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        steps = [decoder.step(tokens, part) for decoder, part in zip(self.members, state, strict=True)]
        log_probs = torch.stack([log_probs.float() for log_probs, _ in steps]).mean(dim=0)  # (N, V)
        return log_probs, tuple(part for _, part in steps)

    def reorder_state(self, state: tuple, rows: torch.Tensor) -> tuple:
        return tuple(decoder.reorder_state(part, rows) for decoder, part in zip(self.members, state, strict=True))


class EnsembleModel(nn.Module):
    """What a `Captioner` uses of a model: `encoder` and `decoder`."""

    def __init__(self, models: list[nn.Module]):
        super().__init__()
        self.encoder = EnsembleEncoder([model.encoder for model in models])
        self.decoder = EnsembleDecoder([model.decoder for model in models])


def check_members(members: list[tuple[Any, str]]) -> None:
    """members: (Captioner, its checkpoint path). Refuse members that do not share a vocabulary, the preprocessing
    or the input kind, naming the first that differs from the first member."""
    (first, first_path), *others = members
    for captioner, path in others:
        for what, mine, theirs in (("vocab", captioner.vocab.itos, first.vocab.itos),
                                   ("preprocess", captioner.preprocess, first.preprocess),
                                   ("inputs", captioner.inputs.kind, first.inputs.kind),
                                   ("frames", getattr(captioner.inputs, "frames", None),
                                    getattr(first.inputs, "frames", None))):
            if mine != theirs:
                detail = f": {mine} against {theirs}"
                if what == "vocab":
                    index = next((i for i, (a, b) in enumerate(zip(mine, theirs, strict=False)) if a != b),
                                 min(len(mine), len(theirs)))
                    detail = f" ({len(mine)} words against {len(theirs)}, first different at index {index})"
                raise ValueError(f"{path}: {what} differs from the first member's ({first_path}){detail}; the members "
                                 "of an ensemble must share it")
