"""Greedy and batched beam search as functions over the decoder contract.

They call only `decoder.init_state(memory)`, `decoder.step(tokens (N,), state) -> (log_probs (N, V), state)`
and `decoder.reorder_state(state, rows)` (models/decoders/base.py), and never look inside a state,
so every registered decoder, image or clip memory, works unchanged. `memory` has `len()` (the batch
B) and `.device`. `max_tokens` counts generated tokens, `<end>` included (so max words + 1).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol

import torch
import torch.nn.functional as F

LENGTH_PENALTIES = ("none", "avg", "gnmt")


class Decoder(Protocol):
    def init_state(self, memory: Any) -> Any: ...
    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]: ...
    def reorder_state(self, state: Any, rows: torch.Tensor) -> Any: ...


def word_by_word(decoder: Decoder, memory: Any, start: int, end: int, max_tokens: int,
                 choose: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
                 copies: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """One word per step for every row: `choose(log_probs (N, V)) -> words (N,), their log-probs (N,)`.

    `copies` rows per image (N = B * copies, image-major), repeated by the decoder's own `reorder_state`.
    Returns tokens (N, T) padded with `end` after each row's `<end>`, and scores (N,): summed log-probs.
    """
    state = decoder.init_state(memory)
    B, device = len(memory) * copies, memory.device
    if copies > 1:
        state = decoder.reorder_state(state, torch.arange(len(memory), device=device).repeat_interleave(copies))
    tokens = torch.full((B,), start, dtype=torch.long, device=device)
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    scores = torch.zeros(B, device=device)
    out = []
    for _ in range(max_tokens):
        log_probs, state = decoder.step(tokens, state)  # (B, V)
        tokens, picked = choose(log_probs)
        scores += torch.where(finished, torch.zeros_like(picked), picked.float())
        tokens = torch.where(finished, torch.full_like(tokens, end), tokens)
        out.append(tokens)
        finished |= tokens == end
        if finished.all():
            break
    return torch.stack(out, dim=1), scores


@torch.no_grad()
def greedy_search(decoder: Decoder, memory: Any, *, start: int, end: int, max_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely word at every step -> tokens (B, T) padded with `end`, scores (B,) summed log-probs."""
    def most_likely(log_probs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        best, words = log_probs.max(dim=-1)
        return words, best
    return word_by_word(decoder, memory, start, end, max_tokens, most_likely)


def repeated_ngram_words(history: torch.Tensor, n: int, vocab_size: int) -> torch.Tensor:
    """Words that would repeat an n-gram: history (N, t) words so far -> banned (N, V) bool.

    A word is banned after a row's last n-1 words when those n-1 words followed by it already occur in the
    row (n=3: trigram blocking; n=1: no word twice). `<end>` never occurs in a live history, so never banned.
    """
    N, t = history.shape
    banned = torch.zeros(N, vocab_size, dtype=torch.bool, device=history.device)
    if n < 1 or t < n:
        return banned
    windows = history.unfold(1, n, 1)  # (N, t - n + 1, n): every n-gram so far
    prefix = history[:, t - n + 1:]  # (N, n - 1): the words the next one would extend
    repeats = (windows[:, :, : n - 1] == prefix.unsqueeze(1)).all(dim=2)  # (N, W)
    counts = torch.zeros(N, vocab_size, dtype=torch.long, device=history.device)
    return counts.scatter_add_(1, windows[:, :, n - 1], repeats.long()) > 0


def mask_log_probs(log_probs: torch.Tensor, t: int, *, end: int, forbid: torch.Tensor, min_words: int,
                   history: torch.Tensor, block_ngram_repeat: int) -> torch.Tensor:
    """The beam searches' word rules at step t: forbidden ids, no `<end>` before `min_words`, no repeated n-gram."""
    log_probs = log_probs.float()
    if forbid.numel():
        log_probs = log_probs.index_fill(1, forbid, float("-inf"))
    if t < min_words:
        log_probs = log_probs.index_fill(1, torch.tensor([end], device=log_probs.device), float("-inf"))
    if block_ngram_repeat:
        banned = repeated_ngram_words(history.reshape(log_probs.size(0), t), block_ngram_repeat, log_probs.size(1))
        log_probs = log_probs.masked_fill(banned, float("-inf"))
    return log_probs


def check_search(max_tokens: int, block_ngram_repeat: int) -> None:
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    if block_ngram_repeat < 0:
        raise ValueError(f"block_ngram_repeat must be >= 0 (0: off), got {block_ngram_repeat}")


def length_penalty_of(length: float | torch.Tensor, kind: str, alpha: float) -> float | torch.Tensor:
    """The divisor of a summed log-prob: 1 (none), L (avg: mean log-prob) or ((5 + L) / 6)^alpha (GNMT)."""
    if kind == "none":
        return 1.0
    if kind == "avg":
        return length
    return ((5.0 + length) / 6.0) ** alpha


@torch.no_grad()
def beam_search(decoder: Decoder, memory: Any, *, start: int, end: int, beam_size: int, max_tokens: int,
                min_words: int = 0, length_penalty: str = "none", alpha: float = 0.7, n_best: int = 1,
                forbid: Iterable[int] = (), block_ngram_repeat: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Beam search over every image at once -> tokens (B, n_best, T) padded with `end`, scores (B, n_best).

    Each step runs the model on all live rows (<= B * beam_size) and takes one top-k over
    beam_size * V candidates per image. As in fairseq, a candidate ending in `<end>` is moved to the
    image's finished pool only when it ranks among the top `beam_size`; the live beams are the best
    `beam_size` candidates that do not end. So beam_size=1 is exactly greedy search. Hypotheses still
    live after `max_tokens` tokens are finished as they stand, so every image gets a caption.

    A score is the summed log-prob divided by `length_penalty_of(L)`, L = scored tokens (`<end>`
    included). An image stops once its n_best-th finished score beats the best score any live beam
    could still reach (log-probs are <= 0), and leaves the batch. `min_words` words come before
    `<end>`; `forbid` lists token ids never produced (e.g. `<unk>`); `block_ngram_repeat=n` (>= 1) never lets a
    hypothesis repeat one of its n-grams (3: trigram blocking). Scores of -inf mean fewer than n_best hypotheses exist.
    """
    if length_penalty not in LENGTH_PENALTIES:
        raise ValueError(f"length_penalty must be one of {LENGTH_PENALTIES}, got {length_penalty!r}")
    if not 1 <= n_best <= beam_size:
        raise ValueError(f"need 1 <= n_best <= beam_size, got n_best={n_best}, beam_size={beam_size}")
    check_search(max_tokens, block_ngram_repeat)
    B, device, K = len(memory), memory.device, beam_size
    state = decoder.init_state(memory)
    forbid = torch.tensor(sorted(set(int(i) for i in forbid)), dtype=torch.long, device=device)

    finished_tokens = torch.full((B, n_best, max_tokens), end, dtype=torch.long, device=device)
    finished_scores = torch.full((B, n_best), float("-inf"), device=device)
    active = torch.arange(B, device=device)  # images still searching
    live_scores = torch.zeros(B, 1, device=device)  # (A, k): one live beam per image before the first word
    history = torch.empty(B, 1, 0, dtype=torch.long, device=device)  # (A, k, t) words so far
    tokens = torch.full((B,), start, dtype=torch.long, device=device)  # (A * k,) last word of each row

    for t in range(max_tokens):
        log_probs, state = decoder.step(tokens, state)  # (A * k, V)
        log_probs = mask_log_probs(log_probs, t, end=end, forbid=forbid, min_words=min_words, history=history,
                                   block_ngram_repeat=block_ngram_repeat)
        A, k = live_scores.shape
        V = log_probs.size(-1)
        candidates = (live_scores.unsqueeze(2) + log_probs.reshape(A, k, V)).view(A, k * V)
        num = min(2 * K, k * V)  # at most k candidates end, so `num - k` of them can stay live
        top_scores, top_ids = candidates.topk(num, dim=1)  # (A, num), best first
        parents, words = top_ids // V, top_ids % V
        ends = words == end
        paths = torch.cat([history.gather(1, parents.unsqueeze(2).expand(-1, -1, t)), words.unsqueeze(2)], dim=2)

        # Finish: `<end>` candidates in the top K, or every top-K candidate at the last step.
        top = min(K, num)
        finishing = torch.ones_like(ends[:, :top]) if t == max_tokens - 1 else ends[:, :top]
        if finishing.any():
            normalised = top_scores[:, :top] / length_penalty_of(float(t + 1), length_penalty, alpha)
            finished_tokens[active], finished_scores[active] = keep_best(
                finished_tokens[active], finished_scores[active], paths[:, :top],
                normalised.masked_fill(~finishing, float("-inf")), end)
        if t == max_tokens - 1:
            break

        # Live: the best candidates that did not end, in score order (sort key: ends last, then rank).
        k_next = min(K, num - k)
        keep = (ends.long() * num + torch.arange(num, device=device)).argsort(dim=1)[:, :k_next]  # (A, k_next)
        live_scores = top_scores.gather(1, keep)
        history = paths.gather(1, keep.unsqueeze(2).expand(-1, -1, t + 1))
        rows = torch.arange(A, device=device).unsqueeze(1) * k + parents.gather(1, keep)  # (A, k_next) into A * k

        # A live beam's summed log-prob only falls as it grows, so the best score it can still reach is
        # that sum over the largest penalty of any longer hypothesis. Images that cannot improve leave.
        bound = live_scores[:, 0] / reach(t, max_tokens, length_penalty, alpha)
        searching = finished_scores[active, n_best - 1] < bound
        if not searching.all():
            active, live_scores = active[searching], live_scores[searching]
            history, rows = history[searching], rows[searching]
            if active.numel() == 0:
                break
        state = decoder.reorder_state(state, rows.reshape(-1))
        tokens = history[:, :, -1].reshape(-1)

    return trim_padding(finished_tokens, end), finished_scores


def keep_best(pool_tokens: torch.Tensor, pool_scores: torch.Tensor, new_tokens: torch.Tensor, new_scores: torch.Tensor,
              end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A finished pool (A, P, T) / (A, P) and new finished captions (A, k, t) / (A, k) (-inf: not finishing) ->
    the P best of both, best first; the new captions are padded with `end` to T."""
    P, T = pool_scores.size(1), pool_tokens.size(2)
    scores = torch.cat([pool_scores, new_scores], dim=1)
    tokens = torch.cat([pool_tokens, F.pad(new_tokens, (0, T - new_tokens.size(2)), value=end)], dim=1)
    best, pick = scores.topk(P, dim=1)
    return tokens.gather(1, pick.unsqueeze(2).expand(-1, -1, T)), best


def reach(t: int, max_tokens: int, length_penalty: str, alpha: float) -> float:
    """After step t, the largest length-penalty divisor any longer hypothesis can have: a live beam's summed
    log-prob only falls as it grows, so that sum over this divisor is the best score it can still reach."""
    return max(length_penalty_of(float(t + 2), length_penalty, alpha),
               length_penalty_of(float(max_tokens), length_penalty, alpha))


def trim_padding(tokens: torch.Tensor, end: int) -> torch.Tensor:
    """tokens (B, K, T) padded with `end` -> the same cut after the longest caption's first `<end>`."""
    ends = tokens == end
    lengths = torch.where(ends.any(2), ends.int().argmax(2) + 1, tokens.size(2))
    return tokens[:, :, : int(lengths.max())]
