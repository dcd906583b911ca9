"""Decoding as pure functions over tensors.

A `step_fn(tokens (N,), state) -> (log_probs (N, V), state)` advances the decoder one word;
states are tuples of tensors whose dim 1 is the batch (LSTM (h, c) layout).
"""
from __future__ import annotations

from typing import Callable

import torch

StepFn = Callable[[torch.Tensor, tuple], tuple[torch.Tensor, tuple]]


@torch.no_grad()
def greedy_search(step_fn: StepFn, state: tuple, start: int, end: int, max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely word at every step -> tokens (B, T) padded with `end`, scores (B,) summed log-probs."""
    B = state[0].size(1)
    device = state[0].device
    tokens = torch.full((B,), start, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    scores = torch.zeros(B, device=device)
    out = []
    for _ in range(max_length):
        log_probs, state = step_fn(tokens, state)  # (B, V)
        best, tokens = log_probs.max(dim=-1)
        scores += torch.where(finished, torch.zeros_like(best), best)
        tokens = torch.where(finished, torch.full_like(tokens, end), tokens)
        out.append(tokens)
        finished |= tokens == end
        if finished.all():
            break
    return torch.stack(out, dim=1), scores
