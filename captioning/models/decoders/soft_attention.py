"""Show, Attend and Tell (Xu et al. 2015): soft attention over the CNN grid at every word.

At each step the previous hidden state attends over the N grid cells; the context vector, scaled by
the gate beta = sigmoid(f_beta(h)), joins the word embedding as the LSTM's input. The LSTM starts from
the mean of the grid. Training adds the doubly stochastic penalty lambda * sum_i (1 - sum_t alpha_ti)^2,
which asks every cell to receive attention over the caption as a whole (training mode only: validation
losses stay plain cross-entropy, comparable with every other decoder's). In a padded batch of region
features the mean and the penalty count only each image's real regions.
"""
from __future__ import annotations

import torch
from torch import nn

from captioning.data.batches import Features
from captioning.models.decoders.attend import (
    AdditiveAttention,
    GridAttentionDecoder,
    GridState,
    coverage_penalty,
    masked_grid,
)
from captioning.models.decoders.base import DECODERS, summed_cross_entropy
from captioning.registry import require_at_least, require_fraction


@DECODERS.register("soft_attention")
class SoftAttentionDecoder(GridAttentionDecoder):
    recurrent_count = 2  # (h, c)
    def __init__(self, vocab_size: int, feature_dim: int, grid_dim: int, embed_size: int = 512,
                 hidden_size: int = 512, attention_size: int = 512, dropout: float = 0.5,
                 doubly_stochastic: float = 1.0, gate: bool = True, skip_padding: bool = True):
        super().__init__()
        if doubly_stochastic < 0:
            raise ValueError(f"model.decoder.doubly_stochastic must be >= 0, got {doubly_stochastic}")
        require_fraction("model.decoder", dropout=dropout)
        require_at_least("model.decoder", 1, embed_size=embed_size, hidden_size=hidden_size,
                         attention_size=attention_size)
        self.skip_padding = skip_padding
        self.vocab_size, self.hidden_size, self.doubly_stochastic = vocab_size, hidden_size, doubly_stochastic
        self.embed = nn.Embedding(vocab_size, embed_size, padding_idx=0)
        self.attention = AdditiveAttention(grid_dim, hidden_size, attention_size)
        self.gate = nn.Linear(hidden_size, grid_dim) if gate else None
        self.init_h = nn.Linear(grid_dim, hidden_size)
        self.init_c = nn.Linear(grid_dim, hidden_size)
        self.cell = nn.LSTMCell(embed_size + grid_dim, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(hidden_size, vocab_size)

    def init_state(self, memory: Features) -> GridState:
        grid, mask = masked_grid(memory)  # padded cells are zeros: their sum adds nothing
        if mask is None:
            mean = grid.mean(dim=1)
        else:
            mean = grid.sum(dim=1) / mask.sum(dim=1, keepdim=True).to(grid.dtype)
        h, c = torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))
        return GridState((h, c), (grid, self.attention.keys(grid)), mask=mask)

    def advance(self, words: torch.Tensor, state: GridState) -> tuple[torch.Tensor, torch.Tensor, GridState]:
        """Embedded words (R, E) -> the new hidden state (R, H), this step's attention weights (R, N), the state."""
        h, c = state.recurrent
        grid, keys = state.rows_memory()
        context, weights = self.attention(grid, keys, h, state.rows_mask())
        if self.gate is not None:
            context = torch.sigmoid(self.gate(h)) * context
        h, c = self.cell(torch.cat([words, context], dim=1), (h, c))
        return h, weights, state.advance((h, c))

    def loss(self, memory: Features, tokens: torch.Tensor, label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:
        hidden, weights = self.teacher_forced(memory, tokens)  # one pass gives the logits and the penalty
        total, count = summed_cross_entropy(self.logits_at_targets(hidden, tokens), tokens, label_smoothing)
        if self.training and self.doubly_stochastic > 0:
            penalty = coverage_penalty(weights, tokens[:, 1:], getattr(memory, "mask", None))
            total = total + self.doubly_stochastic * penalty
        return total, count
