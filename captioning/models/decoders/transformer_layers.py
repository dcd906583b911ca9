"""The pieces the caption Transformer stacks: multi-head attention whose keys and values can be computed once and
cached, pre-norm encoder and decoder layers, and the two kinds of position code.

Pre-norm (x + sublayer(norm(x)), one last norm after the stack) as in ruotianluo/ImageCaptioning.pytorch and the
Annotated Transformer, rather than Vaswani et al.'s post-norm: it trains without a long warmup at small sizes.
A decoder layer reads its past as cached keys and values, so one code path serves the whole causal pass (an
empty past, T positions) and a decoding step (t cached positions, one new one).
"""
from __future__ import annotations

import math

import torch
from torch import nn

KeysValues = tuple[torch.Tensor, torch.Tensor]  # keys, values (B, heads, S, d_head)


class MultiHeadAttention(nn.Module):
    """softmax(Q K^T / sqrt(d_head)) V over `heads` heads. `keys_values` is separate from `forward`, so keys and values
    of the memory are computed once per image and those of past words once per word."""

    def __init__(self, d_model: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.d_head = heads, d_model // heads
        self.query, self.key, self.value = (nn.Linear(d_model, d_model) for _ in range(3))
        self.out = nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, heads, T, d_head)."""
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.d_head).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, S, D) -> keys, values (B, heads, S, d_head)."""
        return self.split(self.key(x)), self.split(self.value(x))

    def forward(self, x: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                allowed: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, T, D) asks keys and values (B, heads, S, d_head); allowed: bool, broadcastable to (B, heads, T, S),
        True where a query may look, or None (everywhere) -> output (B, T, D), weights (B, heads, T, S), exactly 0
        where not allowed."""
        B, T, D = x.shape
        scores = self.split(self.query(x)) @ keys.transpose(2, 3) / math.sqrt(self.d_head)  # (B, heads, T, S)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, float("-inf"))
        weights = scores.float().softmax(dim=-1).to(values.dtype)
        mixed = (self.dropout(weights) @ values).transpose(1, 2).reshape(B, T, D)
        return self.out(mixed), weights


def feed_forward(d_model: int, ff_size: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_model, ff_size), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_size, d_model))


class EncoderLayer(nn.Module):
    """Self-attention over the memory tokens, then a feed-forward layer."""

    def __init__(self, d_model: int, heads: int, ff_size: int, dropout: float):
        super().__init__()
        self.attention_norm, self.attention = nn.LayerNorm(d_model), MultiHeadAttention(d_model, heads, dropout)
        self.ff_norm, self.ff = nn.LayerNorm(d_model), feed_forward(d_model, ff_size, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        """x (B, M, D), allowed (B, 1, 1, M) True at real tokens, or None -> (B, M, D)."""
        h = self.attention_norm(x)
        x = x + self.dropout(self.attention(h, *self.attention.keys_values(h), allowed)[0])
        return x + self.dropout(self.ff(self.ff_norm(x)))


class DecoderLayer(nn.Module):
    """Masked self-attention over the words so far, cross-attention to the memory, a feed-forward layer."""

    def __init__(self, d_model: int, heads: int, ff_size: int, dropout: float):
        super().__init__()
        self.self_norm, self.self_attention = nn.LayerNorm(d_model), MultiHeadAttention(d_model, heads, dropout)
        self.cross_norm, self.cross_attention = nn.LayerNorm(d_model), MultiHeadAttention(d_model, heads, dropout)
        self.ff_norm, self.ff = nn.LayerNorm(d_model), feed_forward(d_model, ff_size, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, past: KeysValues, memory: KeysValues, causal: torch.Tensor | None,
                memory_allowed: torch.Tensor | None) -> tuple[torch.Tensor, KeysValues, torch.Tensor]:
        """x (R, T, D): T new positions after the t cached ones in past (keys, values (R, heads, t, d_head));
        memory: keys, values (R, heads, M, d_head); causal (T, t + T) True where a position may look, or None
        (T = 1: everywhere); memory_allowed (R, 1, 1, M) or None -> x (R, T, D), the past with the T new
        positions (R, heads, t + T, d_head), cross-attention weights (R, heads, T, M)."""
        h = self.self_norm(x)
        keys, values = self.self_attention.keys_values(h)
        # the empty cache of a first step may be float32 while keys come from autocast: take the keys' dtype
        past = (torch.cat([past[0].to(keys.dtype), keys], dim=2),
                torch.cat([past[1].to(values.dtype), values], dim=2))
        x = x + self.dropout(self.self_attention(h, *past, causal)[0])
        attended, weights = self.cross_attention(self.cross_norm(x), *memory, memory_allowed)
        x = x + self.dropout(attended)
        return x + self.dropout(self.ff(self.ff_norm(x))), past, weights


class SinusoidalPositions(nn.Module):
    """Vaswani et al. 2017, section 3.5: PE(p, 2i) = sin(p / 10000^(2i / D)), PE(p, 2i + 1) = cos(the same); any
    length, nothing learned."""

    limit = None  # any position

    def __init__(self, d_model: int, max_positions: int):
        super().__init__()
        exponents = torch.arange(0, d_model, 2) / d_model  # 2i / D
        self.register_buffer("inverse_wavelength", torch.exp(-math.log(10000.0) * exponents), persistent=False)
        self.d_model = d_model

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """positions (T,) int64 -> (T, D)."""
        angles = positions.float().unsqueeze(1) * self.inverse_wavelength  # (T, D / 2)
        return torch.stack([angles.sin(), angles.cos()], dim=2).flatten(1)[:, : self.d_model]


class LearnedPositions(nn.Module):
    """One learned vector per position, up to `max_positions` (<start> is position 0)."""

    def __init__(self, d_model: int, max_positions: int):
        super().__init__()
        self.table = nn.Embedding(max_positions, d_model)
        self.limit = max_positions

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        return self.table(positions)


POSITIONS = {"sinusoidal": SinusoidalPositions, "learned": LearnedPositions}
