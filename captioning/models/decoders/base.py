"""The decoder contract: what training, beam search and export call, and all they may assume.

A decoder turns `memory` (what the encoder produced: `Features` for images, `Clips` of per-frame
features for clips) into words:

    state = decoder.init_state(memory)                  # the state from which the first word is predicted
    log_probs, state = decoder.step(tokens, state)      # tokens (N,) -> log_probs (N, V)
    state = decoder.reorder_state(state, rows)          # keep / repeat rows (N',) of the batch, in that order
    tensors = decoder.export_state(state)               # ONNX export: the state as tensors with rows on dim 0
    state = decoder.import_state(tensors)               # and back
    total, count = decoder.loss(memory, tokens)         # teacher forcing: summed cross-entropy, number of targets
                                                        # (label_smoothing=e: against smoothed targets)

Only the decoder knows where the batch dimension of its state is (an LSTM's (h, c) has it on dim 1,
per-row image regions on dim 0), so decoding code never indexes a state itself.
Register a decoder with `@DECODERS.register("name")`; its constructor takes `vocab_size` and
`feature_dim` (the encoder's pooled size) plus its own plain arguments, and `grid_dim` when it
reads the grid (`uses_grid = True`).
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from captioning.registry import Registry

DECODERS = Registry("decoder")


class CaptionDecoder(nn.Module):
    uses_grid: bool = False  # True: the decoder reads memory.grid, so cached features must include grids

    def init_state(self, memory: Any) -> Any:
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        raise NotImplementedError

    def reorder_state(self, state: Any, rows: torch.Tensor) -> Any:
        raise NotImplementedError

    def export_state(self, state: Any) -> tuple[torch.Tensor, ...]:
        """The state as plain tensors, each with one row per hypothesis on dim 0, so an exported step graph
        (captioning/export) is reordered by indexing every tensor's first axis."""
        raise NotImplementedError(f"{type(self).__name__} cannot be exported (no export_state)")

    def import_state(self, tensors: tuple[torch.Tensor, ...]) -> Any:
        """The inverse of `export_state`."""
        raise NotImplementedError(f"{type(self).__name__} cannot be exported (no import_state)")

    def target_logits(self, memory: Any, tokens: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: logits (N, V) for every real next-word target `tokens[:, 1:][tokens[:, 1:] != 0]`."""
        raise NotImplementedError

    def loss(self, memory: Any, tokens: torch.Tensor, label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
        """Cross-entropy summed over the real (non-pad) next-word targets, and how many there are."""
        return summed_cross_entropy(self.target_logits(memory, tokens), tokens, label_smoothing)


def summed_cross_entropy(logits: torch.Tensor, tokens: torch.Tensor,
                         label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """logits (N, V) at the real next-word targets of tokens (B, T), as `target_logits` gives them -> the summed
    cross-entropy and N; `label_smoothing` e: against targets of 1 - e on the word plus e spread over the V words."""
    targets = tokens[:, 1:]
    targets = targets[targets != 0]  # (N,) in row-major order, as target_logits returns them
    return F.cross_entropy(logits.float(), targets, reduction="sum", label_smoothing=label_smoothing), targets.numel()


def scheduled_sampling_loss(decoder: Any, memory: Any, tokens: torch.Tensor, prob: float,
                            generator: torch.Generator | None = None,
                            label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
    """Scheduled sampling (training/scheduled_sampling.py): tokens (B, T) starting with `<start>`, 0-padded ->
    (cross-entropy summed over the real next-word targets, their number), feeding each row a word drawn from its own
    previous output with probability `prob` (no gradient through the draw). Word by word through `init_state` and
    `step`, so any decoder; with prob 0 it is `loss` in eval mode (`step` applies no word dropout)."""
    state = decoder.init_state(memory)
    words = tokens[:, 0]
    total, count = tokens.new_zeros((), dtype=torch.float32), 0
    for t in range(tokens.size(1) - 1):
        log_probs, state = decoder.step(words, state)  # (B, V)
        targets = tokens[:, t + 1]
        real = targets != 0
        total = total + smoothed_nll(log_probs.float()[real], targets[real], label_smoothing)
        count += int(real.sum())
        own = torch.multinomial(log_probs.detach().float().exp(), 1, generator=generator).squeeze(1)
        swap = torch.rand(len(words), generator=generator, device=words.device) < prob
        words = torch.where(swap & real, own, targets)
    return total, count


def smoothed_nll(log_probs: torch.Tensor, targets: torch.Tensor, label_smoothing: float) -> torch.Tensor:
    """log_probs (N, V), targets (N,) -> the summed cross-entropy, as `F.cross_entropy(label_smoothing=...)` defines
    it: (1 - e) x -log p(word) + e x the mean of -log p over the V words."""
    nll = F.nll_loss(log_probs, targets, reduction="sum")
    if label_smoothing == 0:
        return nll  # the plain loss, bit for bit
    return (1 - label_smoothing) * nll - label_smoothing * log_probs.mean(dim=1).sum()
