"""What the attention decoders share: additive attention over grid cells, and a state that points at its image.

Beam search keeps K rows per image and reorders them every step. An attention decoder's state is
therefore split in two: the recurrent tensors, one row per live hypothesis, and the per-image memory
(the grid and its attention keys), kept once per image. Each row carries the index of its image;
`reorder_state` moves the rows and their indices, and the first step after it gathers each row's memory, which the
steps after it reuse until the next reorder. Sampling K captions per image (self-critical training) thus gathers
once per batch, not once per word: with gradients, each step's gather would be kept for the backward pass (20
copies of a (B x K)-row grid where one does). A padded batch of region features (`Features.mask`) keeps its mask
with the memory, once per image, and each row reads its image's mask the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn
from torch.nn import functional as F

from captioning.models.decoders.base import CaptionDecoder


class AdditiveAttention(nn.Module):
    """score_i = w . tanh(W_g g_i + W_q q) over the N cells g_i of a grid; weights = softmax(scores) (Bahdanau),
    exactly 0 at padded cells."""

    def __init__(self, grid_dim: int, query_dim: int, attention_size: int):
        super().__init__()
        self.key = nn.Linear(grid_dim, attention_size)
        self.query = nn.Linear(query_dim, attention_size)
        self.score = nn.Linear(attention_size, 1)

    def keys(self, grid: torch.Tensor) -> torch.Tensor:
        """grid (B, N, C) -> keys (B, N, A): the query-independent half, computed once per image."""
        return self.key(grid)

    def forward(self, grid: torch.Tensor, keys: torch.Tensor, query: torch.Tensor,
                mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """grid (B, N, C), keys (B, N, A), query (B, Q), mask (B, N) True at real cells or None (all real) ->
        context (B, C), weights (B, N) summing to 1. Every row needs one real cell."""
        scores = self.score(torch.tanh(keys + self.query(query).unsqueeze(1))).squeeze(2)  # (B, N)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.float().softmax(dim=-1).to(grid.dtype)
        return torch.bmm(weights.unsqueeze(1), grid).squeeze(1), weights


@dataclass
class GridState:
    """recurrent: tensors with one row per live hypothesis on dim 0; memory: per-image tensors (B, ...) (grid,
    keys, pooled...); image (R,): the image each row reads, None while row i is image i (no reordering yet);
    mask (B, N): per image, True at the real cells of its grid, None when every cell is real."""
    recurrent: tuple[torch.Tensor, ...]
    memory: tuple[torch.Tensor, ...]
    image: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    gathered: tuple | None = field(default=None, repr=False, compare=False)  # (rows' memory, mask) for `image`

    def rows(self) -> tuple[tuple[torch.Tensor, ...], torch.Tensor | None]:
        """Each live row's memory (R, ...) and mask (R, N) or None, gathered on the first call after a reorder."""
        if self.image is None:
            return self.memory, self.mask
        if self.gathered is None:
            self.gathered = (tuple(m.index_select(0, self.image) for m in self.memory),
                             None if self.mask is None else self.mask.index_select(0, self.image))
        return self.gathered

    def rows_memory(self) -> tuple[torch.Tensor, ...]:
        return self.rows()[0]

    def rows_mask(self) -> torch.Tensor | None:
        return self.rows()[1]

    def first(self, rows: int) -> GridState:
        """The first `rows` rows, for a state never reordered (teacher forcing: row i is image i)."""
        return replace(self, recurrent=tuple(r[:rows] for r in self.recurrent),
                       memory=tuple(m[:rows] for m in self.memory),
                       mask=None if self.mask is None else self.mask[:rows])

    def reorder(self, rows: torch.Tensor) -> GridState:
        return replace(self, recurrent=tuple(r.index_select(0, rows) for r in self.recurrent),
                       image=rows if self.image is None else self.image.index_select(0, rows), gathered=None)

    def advance(self, recurrent: tuple[torch.Tensor, ...]) -> GridState:
        return replace(self, recurrent=recurrent)  # the same rows read the same images: `gathered` stays


def grid_of(memory) -> torch.Tensor:
    """The (B, N, C) grid of `Features`, with a clear error when the encoder or feature cache gave none."""
    if getattr(memory, "grid", None) is None:
        raise ValueError("this decoder attends over a feature grid, and the features hold none "
                         "(a feature store written without store_grid=true, or an encoder without a grid)")
    return memory.grid


def distinct_images(memory) -> tuple[object, torch.Tensor | None]:
    """A batch whose rows repeat images (data.sampling=grouped puts an image's captions in one batch) -> its distinct
    images and the one each row reads (B,); the batch and None when no image repeats. Rows are one image when their
    pooled vectors, grids (padding aside) and masks are equal, so merging them changes no value, only how often it is
    computed."""
    pooled = memory.pooled.detach()
    if pooled.size(0) < 2 or torch.jit.is_tracing():
        return memory, None
    unique, image = torch.unique(pooled, dim=0, return_inverse=True)
    if unique.size(0) == pooled.size(0):
        return memory, None
    rows = torch.arange(pooled.size(0), device=pooled.device)
    first = torch.full((unique.size(0),), pooled.size(0), device=pooled.device)
    first = first.scatter_reduce(0, image, rows, "amin")  # each distinct image's first row
    distinct = memory.index_select(0, first)
    if getattr(memory, "grid", None) is not None:  # what the rows read: padding (even NaN) is not compared
        for held, merged in zip(masked_grid(memory), masked_grid(distinct), strict=True):
            if held is not None and not torch.equal(held, merged.index_select(0, image)):
                return memory, None  # equal pooled vectors, different grids: kept apart
    return distinct, image


def masked_grid(memory) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The grid (B, N, C) and its mask (B, N) or None, with padded cells zeroed: what a batch holds there (even
    inf or NaN) reaches no result."""
    grid, mask = grid_of(memory), getattr(memory, "mask", None)
    if mask is not None:
        grid = grid.masked_fill(~mask.unsqueeze(2), 0)
    return grid, mask


def coverage_penalty(weights: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Doubly stochastic attention (Xu et al. 2015, eq. 14): sum over images and real cells of (1 - sum_t alpha_ti)^2,
    the sum over the real (non-pad) steps. weights (B, T, N), targets (B, T), mask (B, N) True at real cells or None."""
    attended = (weights.float() * (targets != 0).unsqueeze(2)).sum(dim=1)  # (B, N)
    penalty = (1.0 - attended) ** 2
    if mask is not None:
        penalty = penalty.masked_fill(~mask, 0)  # padding is never attended: it would add 1 per padded cell
    return penalty.sum()


class GridAttentionDecoder(CaptionDecoder):
    """An attention decoder is its `init_state` and `advance` (one word for every live row); the rest is here.

    Subclasses set `embed`, `dropout` and `project` (hidden -> vocabulary logits), and `recurrent_count`: how many
    tensors of their GridState are recurrent."""
    uses_grid = True
    skip_padding = False  # constructors set it from their `skip_padding` argument
    recurrent_count: int
    embed: nn.Embedding
    dropout: nn.Dropout
    project: nn.Linear

    def advance(self, words: torch.Tensor, state: GridState) -> tuple[torch.Tensor, torch.Tensor, GridState]:
        """Embedded words (R, E) -> the hidden state that predicts the next word (R, H), attention weights (R, N),
        and the new state."""
        raise NotImplementedError

    def step(self, tokens: torch.Tensor, state: GridState) -> tuple[torch.Tensor, GridState]:
        h, _, state = self.advance(self.embed(tokens), state)
        return torch.log_softmax(self.project(h).float(), dim=-1), state

    def reorder_state(self, state: GridState, rows: torch.Tensor) -> GridState:
        return state.reorder(rows)

    def export_state(self, state: GridState) -> tuple[torch.Tensor, ...]:
        """Recurrent tensors, then each row's own copy of its image's memory (an exported graph has no indices),
        then, for a padded batch only, each row's mask (the one bool tensor)."""
        mask = state.rows_mask()
        return (*state.recurrent, *state.rows_memory(), *(() if mask is None else (mask,)))

    def import_state(self, tensors: tuple[torch.Tensor, ...]) -> GridState:
        mask = tensors[-1] if tensors[-1].dtype == torch.bool else None
        memory = tensors[self.recurrent_count: len(tensors) - (mask is not None)]
        return GridState(tuple(tensors[: self.recurrent_count]), tuple(memory), mask=mask)

    def teacher_forced(self, memory, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) -> hidden states (B, T - 1, H) and attention weights (B, T - 1, N), one per next word.

        With `skip_padding` (training only), the rows are sorted longest first and each step runs only the captions
        still going (Flickr captions in batches of 64: 1.6x fewer row-steps than the padded batch). No loss reads
        the positions after a caption's end (their targets are padding): they hold zeros or a stale state."""
        ends = None
        if self.skip_padding and self.training:
            lengths = (tokens[:, 1:] != 0).sum(dim=1)  # words each caption predicts
            order = lengths.argsort(descending=True)
            tokens, memory = tokens.index_select(0, order), memory.index_select(0, order)
            ends = lengths.index_select(0, order).tolist()
        state = self.init_state(memory)
        words = self.dropout(self.embed(tokens[:, :-1]))
        batch = rows = words.size(0)
        hidden, weights = [], []
        for t in range(words.size(1)):
            running = rows
            while ends is not None and running > 1 and ends[running - 1] <= t:
                running -= 1  # one row always steps, so every step has an output to pad
            if running < rows:
                rows = running
                state = state.first(rows)
            h, w, state = self.advance(words[:rows, t], state)
            hidden.append(h if rows == batch else F.pad(h, (0, 0, 0, batch - rows)))
            weights.append(w if rows == batch else F.pad(w, (0, 0, 0, batch - rows)))
        hidden, weights = torch.stack(hidden, dim=1), torch.stack(weights, dim=1)
        if ends is None:
            return hidden, weights
        back = order.argsort()
        return hidden.index_select(0, back), weights.index_select(0, back)

    def logits_at_targets(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.project(self.dropout(hidden[tokens[:, 1:] != 0]))  # (N, V), as target_logits promises

    def target_logits(self, memory, tokens: torch.Tensor) -> torch.Tensor:
        return self.logits_at_targets(self.teacher_forced(memory, tokens)[0], tokens)

    def attention_weights(self, memory, tokens: torch.Tensor) -> torch.Tensor:
        """Where each word of the captions `tokens` (B, T) looked: (B, T - 1, N), row t for the word
        tokens[:, t + 1]."""
        return self.teacher_forced(memory, tokens)[1]
