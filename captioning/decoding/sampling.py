"""Sampling captions: nucleus / top-k sampling for captioning, and samples with their graph for self-critical training.

Like the searches (decoding/search.py) they see a decoder only through `init_state`, `step` and `reorder_state`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch

from captioning.decoding.search import Decoder, word_by_word


@torch.no_grad()
def sample(decoder: Decoder, memory: Any, *, start: int, end: int, max_tokens: int, temperature: float = 1.0,
           top_k: int = 0, top_p: float = 1.0, samples: int = 1, forbid: Iterable[int] = (),
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw each word from softmax(log_probs / temperature), restricted to the `top_k` likeliest (0: all) and to
    the nucleus: the fewest likeliest words whose probability reaches `top_p` (Holtzman et al. 2020; 1: all).

    `samples` captions per image, image-major; `forbid` lists token ids never drawn (e.g. `<unk>`). Returns tokens (B * samples, T) padded with `end` and scores
    (B * samples,): the model's own summed log-probs of the drawn words (before temperature and truncation),
    so samples can be ranked against beam search output.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0 (use greedy_search for the argmax), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")

    forbid = sorted(set(int(i) for i in forbid))

    def draw(log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = log_probs.float() / temperature
        if forbid:
            logits = logits.index_fill(1, torch.tensor(forbid, device=logits.device), float("-inf"))
        if 0 < top_k < logits.size(-1):
            kth_best = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
            logits = logits.masked_fill(logits < kth_best, float("-inf"))
        if top_p < 1:
            logits = logits.masked_fill(outside_nucleus(logits.softmax(dim=-1), top_p), float("-inf"))
        words = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator).squeeze(1)
        return words, log_probs.gather(1, words[:, None]).squeeze(1)
    return word_by_word(decoder, memory, start, end, max_tokens, draw, copies=samples)


def outside_nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """probs (N, V) -> (N, V) True for the words outside the nucleus: those ranked after the likeliest words
    whose summed probability first reaches top_p (the likeliest word is always inside)."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    before = sorted_probs.cumsum(dim=-1) - sorted_probs  # probability of the words ranked above each
    return torch.zeros_like(probs, dtype=torch.bool).scatter(1, order, before >= top_p)


@dataclass
class Samples:
    tokens: torch.Tensor     # (B * K, T) drawn words, image-major (rows k*... of image b are b*K .. b*K+K-1), `end` after <end>
    log_probs: torch.Tensor  # (B * K, T) log-probability of each drawn word under the sampling distribution (with grad;
                             # after a row's <end>: of the word drawn and replaced by padding, masked out)
    mask: torch.Tensor       # (B * K, T) True for the words that count: up to and including each row's <end>
    entropy: torch.Tensor    # () mean entropy of the sampling distribution over the counted steps (no grad)


def sample_with_log_probs(decoder: Any, memory: Any, *, start: int, end: int, max_tokens: int, samples: int,
                          temperature: float = 1.0, generator: torch.Generator | None = None) -> Samples:
    """K = `samples` captions per image drawn from softmax(logits / temperature), keeping the graph for the loss
    (self-critical training). Each image's state is repeated K times by the decoder's own `reorder_state`."""
    if samples < 1 or temperature <= 0:
        raise ValueError(f"need samples >= 1 and temperature > 0, got {samples} and {temperature}")
    picked, entropies = [], []

    def draw(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # scores (rows, V) log-probabilities
        tempered = torch.log_softmax(scores.float() / temperature, dim=-1)
        words = torch.multinomial(tempered.detach().exp(), 1, generator=generator).squeeze(1)
        picked.append(tempered.gather(1, words[:, None]).squeeze(1))
        with torch.no_grad():
            entropies.append(-(tempered.exp() * tempered).sum(-1))
        return words, picked[-1]

    tokens, _ = word_by_word(decoder, memory, start, end, max_tokens, draw, copies=samples)
    ended = (tokens == end).long().cumsum(dim=1)
    mask = torch.cat([torch.zeros_like(ended[:, :1]), ended[:, :-1]], dim=1) == 0  # up to and including the first <end>
    entropy = (torch.stack(entropies, dim=1) * mask).sum() / mask.sum().clamp(min=1)
    return Samples(tokens, torch.stack(picked, dim=1), mask, entropy)
