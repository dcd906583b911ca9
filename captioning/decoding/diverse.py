"""Diverse beam search (Vijayakumar et al. 2018): G groups of beams, each penalised for the words earlier groups chose.

The beam is split into `groups` groups of beam_size / groups beams, searched in lockstep over one batch of rows.
At each step group g picks its candidates by log-prob minus `strength` x (how many beams of groups 0..g-1 chose
that word at this step: Hamming diversity). The penalty steers the choice only: every caption is scored by its
own log-prob and length penalty, as in `beam_search`.
"""
from __future__ import annotations

from typing import Any, Iterable

import torch

from captioning.decoding.search import (
    Decoder,
    check_search,
    keep_best,
    length_penalty_of,
    mask_log_probs,
    reach,
    trim_padding,
)


@torch.no_grad()
def diverse_beam_search(decoder: Decoder, memory: Any, *, start: int, end: int, beam_size: int, groups: int,
                        strength: float, max_tokens: int, min_words: int = 0, length_penalty: str = "none",
                        alpha: float = 0.7, n_best: int = 1, forbid: Iterable[int] = (),
                        block_ngram_repeat: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """-> tokens (B, n_best, T) padded with `end`, scores (B, n_best).

    Each group keeps its own n_best finished captions. The n-best list takes every group's best first (best
    score first), then every group's second best, and so on: n_best=groups gives one caption per group, and
    the first caption is the best-scoring one found. groups=1 is exactly `beam_search`.
    """
    if groups < 1 or beam_size % groups:
        raise ValueError(f"diversity groups must divide beam_size={beam_size}, got {groups}")
    if strength < 0:
        raise ValueError(f"diversity strength must be >= 0, got {strength}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"need 1 <= n_best <= beam_size, got n_best={n_best}, beam_size={beam_size}")
    check_search(max_tokens, block_ngram_repeat)
    B, G, device = len(memory), groups, memory.device
    k = beam_size // G  # beams per group
    rows_of = torch.arange(B * G * k, device=device).view(B, G, k)
    state = decoder.reorder_state(decoder.init_state(memory), rows_of.flatten() // (G * k))
    forbid = torch.tensor(sorted(set(int(i) for i in forbid)), dtype=torch.long, device=device)

    # Before the first word every beam of a group is the same: only the group's first beam may expand.
    first_only = torch.full((k,), float("-inf"), device=device).index_fill(0, torch.tensor([0], device=device), 0.0)
    live = first_only.repeat(B, G, 1)  # (B, G, k) summed log-probs
    chosen = live.clone()  # (B, G, k) the same minus the diversity penalties: what selection ranks
    history = torch.empty(B, G, k, 0, dtype=torch.long, device=device)
    done_tokens = torch.full((B, G, n_best, max_tokens), end, dtype=torch.long, device=device)
    done_scores = torch.full((B, G, n_best), float("-inf"), device=device)
    tokens = torch.full((B * G * k,), start, dtype=torch.long, device=device)

    for t in range(max_tokens):
        log_probs, state = decoder.step(tokens, state)
        log_probs = mask_log_probs(log_probs, t, end=end, forbid=forbid, min_words=min_words, history=history,
                                   block_ngram_repeat=block_ngram_repeat)
        V = log_probs.size(-1)
        log_probs = log_probs.view(B, G, k, V)
        last = t == max_tokens - 1
        taken = torch.zeros(B, V, device=device)  # beams of earlier groups that chose each word at this step
        parents, words = torch.zeros(B, G, k, dtype=torch.long, device=device), torch.zeros_like(rows_of)
        next_live, next_chosen = torch.empty_like(live), torch.empty_like(chosen)
        for g in range(G):
            totals = (live[:, g].unsqueeze(2) + log_probs[:, g]).view(B, k * V)
            ranked = (chosen[:, g].unsqueeze(2) + log_probs[:, g] - strength * taken.unsqueeze(1)).view(B, k * V)
            top_ranked, top_ids = ranked.topk(2 * k, dim=1)  # (B, 2k), k*V >= 2k as V >= 2 (a word and <end>)
            top_words = top_ids % V
            ends = top_words == end
            top_totals = totals.gather(1, top_ids)
            paths = torch.cat([history[:, g].gather(1, (top_ids // V).unsqueeze(2).expand(-1, -1, t)),
                               top_words.unsqueeze(2)], dim=2)  # (B, 2k, t + 1)
            finishing = torch.ones_like(ends[:, :k]) if last else ends[:, :k]
            if finishing.any():
                scores = top_totals[:, :k] / length_penalty_of(float(t + 1), length_penalty, alpha)
                done_tokens[:, g], done_scores[:, g] = keep_best(done_tokens[:, g], done_scores[:, g], paths[:, :k],
                                                                 scores.masked_fill(~finishing, float("-inf")), end)
            taken.scatter_add_(1, top_words[:, :k], top_ranked[:, :k].isfinite().float())
            keep = (ends.long() * 2 * k + torch.arange(2 * k, device=device)).argsort(dim=1)[:, :k]  # not ending first
            next_live[:, g], next_chosen[:, g] = top_totals.gather(1, keep), top_ranked.gather(1, keep)
            parents[:, g], words[:, g] = (top_ids // V).gather(1, keep), top_words.gather(1, keep)
        if last:
            break
        history = torch.cat([history.gather(2, parents.unsqueeze(3).expand(-1, -1, -1, t)), words.unsqueeze(3)], 3)
        live, chosen = next_live, next_chosen
        # Stop once no group of any image can still improve its n-th best (log-probs only fall; see `reach`).
        if bool((done_scores[:, :, n_best - 1] >= live.max(dim=2).values / reach(t, max_tokens, length_penalty,
                                                                                    alpha)).all()):
            break
        state = decoder.reorder_state(state, (rows_of[:, :, :1] + parents).flatten())
        tokens = words.flatten()
    tokens, scores = interleave_groups(done_tokens, done_scores, n_best)
    return trim_padding(tokens, end), scores


def interleave_groups(tokens: torch.Tensor, scores: torch.Tensor, n_best: int) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, G, P, T), scores (B, G, P) best first within each group -> the n_best of every image: the groups'
    best captions (by score), then their second best, ...; missing captions (score -inf) last."""
    B, G, P, T = tokens.shape
    rank = torch.arange(P, device=scores.device).repeat(G)  # (G * P,) place within its group
    flat_scores, flat_tokens = scores.view(B, G * P), tokens.view(B, G * P, T)
    by_score = flat_scores.argsort(dim=1, descending=True, stable=True)
    key = (rank.expand(B, -1) + P * flat_scores.isinf().long()).gather(1, by_score)
    order = by_score.gather(1, key.argsort(dim=1, stable=True))[:, :n_best]
    return flat_tokens.gather(1, order.unsqueeze(2).expand(-1, -1, T)), flat_scores.gather(1, order)
