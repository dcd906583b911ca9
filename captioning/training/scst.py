"""Self-critical sequence training (Rennie et al. 2017): sampling with gradients, baselines, the policy-gradient loss.

Like decoding.py, sampling sees a decoder only through its contract (`init_state`, `step`, `reorder_state`), so it
works for every registered decoder, the attention ones included: each image's state is repeated K times by the
decoder's own `reorder_state`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

BASELINES = ("greedy", "mean")


@dataclass
class Samples:
    tokens: torch.Tensor     # (B * K, T) drawn words, image-major (rows k*... of image b are b*K .. b*K+K-1), `end` after <end>
    log_probs: torch.Tensor  # (B * K, T) log-probability of each drawn word under the sampling distribution (with grad)
    mask: torch.Tensor       # (B * K, T) True for the words that count: up to and including each row's <end>
    entropy: torch.Tensor    # () mean entropy of the sampling distribution over the counted steps (no grad)


def sample_with_log_probs(decoder: Any, memory: Any, *, start: int, end: int, max_tokens: int, samples: int,
                          temperature: float = 1.0, generator: torch.Generator | None = None) -> Samples:
    """K = `samples` captions per image drawn from softmax(logits / temperature), keeping the graph for the loss."""
    if samples < 1 or temperature <= 0:
        raise ValueError(f"need samples >= 1 and temperature > 0, got {samples} and {temperature}")
    B, device = len(memory), memory.device
    state = decoder.reorder_state(decoder.init_state(memory), torch.arange(B, device=device).repeat_interleave(samples))
    rows = B * samples
    words = torch.full((rows,), start, dtype=torch.long, device=device)
    finished = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens, log_probs, mask, entropies = [], [], [], []
    for _ in range(max_tokens):
        scores, state = decoder.step(words, state)  # (rows, V) log-probabilities
        tempered = torch.log_softmax(scores.float() / temperature, dim=-1)
        words = torch.multinomial(tempered.detach().exp(), 1, generator=generator).squeeze(1)
        counted = ~finished
        words = torch.where(finished, torch.full_like(words, end), words)
        tokens.append(words)
        log_probs.append(tempered.gather(1, words[:, None]).squeeze(1))
        mask.append(counted)
        with torch.no_grad():
            entropies.append((-(tempered.exp() * tempered).sum(-1) * counted).sum())
        finished = finished | (words == end)
        if bool(finished.all()):
            break
    mask_tensor = torch.stack(mask, dim=1)
    entropy = torch.stack(entropies).sum() / mask_tensor.sum().clamp(min=1)
    return Samples(torch.stack(tokens, dim=1), torch.stack(log_probs, dim=1), mask_tensor, entropy)


def baseline_of(rewards: torch.Tensor, kind: str, greedy: torch.Tensor | None = None) -> torch.Tensor:
    """rewards (B, K) of each image's K samples -> the baseline of each sample (B, K).

    greedy: the reward of the image's greedy caption (Rennie et al. 2017); mean: the mean reward of the image's other
    K - 1 samples (the "new SCST" variant, no extra decoding)."""
    if kind == "greedy":
        if greedy is None:
            raise ValueError("the greedy baseline needs the greedy captions' rewards")
        return greedy[:, None].expand_as(rewards)
    if kind == "mean":
        K = rewards.size(1)
        if K < 2:
            raise ValueError("the mean-of-others baseline needs at least 2 samples per image")
        return (rewards.sum(dim=1, keepdim=True) - rewards) / (K - 1)
    raise ValueError(f"baseline must be one of {BASELINES}, got {kind!r}")


def policy_loss(samples: Samples, rewards: torch.Tensor, baseline: torch.Tensor) -> tuple[torch.Tensor, int]:
    """-(r - b) x log p summed over every counted word of every sample, and the number of those words
    (the training loop divides the one by the other). rewards and baseline: (B * K,) or (B, K), no gradient."""
    advantage = (rewards - baseline).reshape(-1).to(samples.log_probs.device, samples.log_probs.dtype).detach()
    counted = samples.mask.to(samples.log_probs.dtype)
    total = -(advantage[:, None] * samples.log_probs * counted).sum()
    return total, int(samples.mask.sum())
