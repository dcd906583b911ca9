"""Up-Down (Anderson et al. 2018): a top-down attention LSTM and a language LSTM over the CNN grid.

Per word: the attention LSTM reads [language LSTM's last h, the pooled image vector, the previous
word]; its hidden state attends over the grid cells (embedded to `hidden_size`); the language LSTM
reads [attended context, attention LSTM's h] and predicts the word. Both LSTMs start at zero. The
"bottom-up" regions are the CNN grid cells, or precomputed region features (padded regions get no
attention), and the global feature is the memory's pooled vector.

The pooled vector is the same at every step, so its share of the attention LSTM's gates, W_pooled x
(4H x D: 1280 of the 2304 input columns with EfficientNet-Lite0), is computed once per image by
`init_state` and kept with the grid; each step adds it to the gates of the per-step inputs. The model
is the one LSTM over the concatenated input, computed in fewer multiply-adds.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from captioning.data.batches import Features
from captioning.models.decoders.attend import AdditiveAttention, GridAttentionDecoder, GridState, masked_grid
from captioning.models.decoders.base import DECODERS
from captioning.registry import require_at_least, require_fraction


def lstm_update(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gates (R, 4H) in nn.LSTMCell's order (input, forget, cell, output), c (R, H) -> the new (h, c)."""
    i, f, g, o = gates.chunk(4, dim=1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


@DECODERS.register("updown")
class UpDownDecoder(GridAttentionDecoder):
    recurrent_count = 4  # the attention and language LSTMs' (h, c)
    def __init__(self, vocab_size: int, feature_dim: int, grid_dim: int, embed_size: int = 512,
                 hidden_size: int = 512, attention_size: int = 512, dropout: float = 0.5, skip_padding: bool = True):
        super().__init__()
        require_fraction("model.decoder", dropout=dropout)
        require_at_least("model.decoder", 1, embed_size=embed_size, hidden_size=hidden_size,
                         attention_size=attention_size)
        self.skip_padding = skip_padding
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.embed = nn.Embedding(vocab_size, embed_size, padding_idx=0)
        self.grid_embed = nn.Sequential(nn.Linear(grid_dim, hidden_size), nn.ReLU())
        self.attention = AdditiveAttention(hidden_size, hidden_size, attention_size)
        # The attention LSTM over [h_lang, pooled, word], its input weights split in two: `attend_lstm` holds
        # the per-step inputs' [h_lang, word] columns, `attend_pooled` the pooled vector's (drawn from the
        # same U(-1/sqrt(H), 1/sqrt(H)) as nn.LSTMCell's).
        self.attend_lstm = nn.LSTMCell(hidden_size + embed_size, hidden_size)
        self.attend_pooled = nn.Linear(feature_dim, 4 * hidden_size, bias=False)
        nn.init.uniform_(self.attend_pooled.weight, -1 / math.sqrt(hidden_size), 1 / math.sqrt(hidden_size))
        self.language_lstm = nn.LSTMCell(hidden_size + hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(hidden_size, vocab_size)

    def init_state(self, memory: Features) -> GridState:
        grid, mask = masked_grid(memory)
        grid = self.dropout(self.grid_embed(grid))  # (B, N, H)
        zeros = grid.new_zeros(grid.size(0), self.hidden_size)
        pooled_gates = self.attend_pooled(memory.pooled.to(grid.dtype))  # (B, 4H), the same at every step
        return GridState((zeros, zeros, zeros, zeros), (grid, self.attention.keys(grid), pooled_gates), mask=mask)

    def advance(self, words: torch.Tensor, state: GridState) -> tuple[torch.Tensor, torch.Tensor, GridState]:
        """Embedded words (R, E) -> the language LSTM's hidden state (R, H), attention weights (R, N), the state."""
        h_att, c_att, h_lang, c_lang = state.recurrent
        grid, keys, pooled_gates = state.rows_memory()
        cell = self.attend_lstm
        gates = (pooled_gates + F.linear(torch.cat([h_lang, words], dim=1), cell.weight_ih, cell.bias_ih)
                 + F.linear(h_att, cell.weight_hh, cell.bias_hh))
        h_att, c_att = lstm_update(gates, c_att)
        context, weights = self.attention(grid, keys, h_att, state.rows_mask())
        h_lang, c_lang = self.language_lstm(torch.cat([context, self.dropout(h_att)], dim=1), (h_lang, c_lang))
        return h_lang, weights, state.advance((h_att, c_att, h_lang, c_lang))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Checkpoints written before the split hold one attention-LSTM weight over [h_lang, pooled, word]:
        its pooled columns become `attend_pooled`."""
        joined, H = state_dict.get(prefix + "attend_lstm.weight_ih"), self.hidden_size
        pooled_key = prefix + "attend_pooled.weight"
        if joined is not None and pooled_key not in state_dict:
            D = self.attend_pooled.in_features
            if joined.dim() == 2 and joined.size(1) == self.attend_lstm.input_size + D:
                state_dict[prefix + "attend_lstm.weight_ih"] = torch.cat([joined[:, :H], joined[:, H + D:]], dim=1)
                state_dict[pooled_key] = joined[:, H:H + D]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
