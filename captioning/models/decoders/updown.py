"""Up-Down (Anderson et al. 2018): a top-down attention LSTM and a language LSTM over the CNN grid.

Per word: the attention LSTM reads [language LSTM's last h, the pooled image vector, the previous
word]; its hidden state attends over the grid cells (embedded to `hidden_size`); the language LSTM
reads [attended context, attention LSTM's h] and predicts the word. Both LSTMs start at zero. Here the
"bottom-up" regions are the CNN grid cells and the global feature is the encoder's pooled vector.
"""
from __future__ import annotations

import torch
from torch import nn

from captioning.models.decoders.attend import AdditiveAttention, GridAttentionDecoder, GridState, grid_of
from captioning.models.decoders.base import DECODERS
from captioning.models.memory import Features


@DECODERS.register("updown")
class UpDownDecoder(GridAttentionDecoder):
    recurrent_count = 4  # the attention and language LSTMs' (h, c)
    def __init__(self, vocab_size: int, feature_dim: int, grid_dim: int, embed_size: int = 512,
                 hidden_size: int = 512, attention_size: int = 512, dropout: float = 0.5):
        super().__init__()
        if not 0 <= dropout < 1:
            raise ValueError(f"model.decoder.dropout must be in [0, 1), got {dropout}")
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.embed = nn.Embedding(vocab_size, embed_size, padding_idx=0)
        self.grid_embed = nn.Sequential(nn.Linear(grid_dim, hidden_size), nn.ReLU())
        self.attention = AdditiveAttention(hidden_size, hidden_size, attention_size)
        self.attend_lstm = nn.LSTMCell(hidden_size + feature_dim + embed_size, hidden_size)
        self.language_lstm = nn.LSTMCell(hidden_size + hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(hidden_size, vocab_size)

    def init_state(self, memory: Features) -> GridState:
        grid = self.dropout(self.grid_embed(grid_of(memory)))  # (B, N, H)
        zeros = grid.new_zeros(grid.size(0), self.hidden_size)
        return GridState((zeros, zeros, zeros, zeros), (grid, self.attention.keys(grid), memory.pooled))

    def advance(self, words: torch.Tensor, state: GridState) -> tuple[torch.Tensor, torch.Tensor, GridState]:
        """Embedded words (R, E) -> the language LSTM's hidden state (R, H), attention weights (R, N), the state."""
        h_att, c_att, h_lang, c_lang = state.recurrent
        grid, keys, pooled = state.rows_memory()
        h_att, c_att = self.attend_lstm(torch.cat([h_lang, pooled.to(words.dtype), words], dim=1), (h_att, c_att))
        context, weights = self.attention(grid, keys, h_att)
        h_lang, c_lang = self.language_lstm(torch.cat([context, self.dropout(h_att)], dim=1), (h_lang, c_lang))
        return h_lang, weights, state.advance((h_att, c_att, h_lang, c_lang))
