"""The caption Transformer (Vaswani et al. 2017 as captioning uses it: ruotianluo/ImageCaptioning.pytorch's
transformer, the M2 paper's baseline) over the encoder's grid cells or regions.

Memory: each grid cell (or region) and the pooled vector, as one extra token after the cells, projected to d_model,
then `memory_layers` self-attention layers. Words: `num_layers` layers of masked self-attention, cross-attention
to the memory and a feed-forward layer. `init_state` encodes the memory once per image and computes every layer's
cross-attention keys and values from it; each `step` adds one word, whose self-attention reads the keys and values
of the words before it from a cache that grows by one position per step, so a step costs O(t), not O(t^2).

The state is a `GridState`: the caches are its recurrent tensors, one row per hypothesis, (R, heads, t, d_head);
the cross-attention keys and values are its per-image memory, gathered per row once after each reorder. A padded
batch of regions (`Features.mask`) gets no attention on its padding, in the memory layers as in cross-attention.
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from captioning.data.batches import Features
from captioning.models.decoders.attend import GridAttentionDecoder, GridState, distinct_images, masked_grid
from captioning.models.decoders.base import DECODERS
from captioning.models.decoders.transformer_layers import POSITIONS, DecoderLayer, EncoderLayer
from captioning.registry import require_at_least, require_fraction


@DECODERS.register("transformer")
class TransformerDecoder(GridAttentionDecoder):
    """Pre-norm layers (transformer_layers.py); `GridAttentionDecoder` gives it `step`, the state's reorder and
    export, the loss and the attention maps."""

    def __init__(self, vocab_size: int, feature_dim: int, grid_dim: int, d_model: int = 512, heads: int = 8,
                 num_layers: int = 3, ff_size: int = 2048, memory_layers: int = 3, dropout: float = 0.1,
                 positions: str = "sinusoidal", max_positions: int = 64, tie_embeddings: bool = True):
        super().__init__()
        require_at_least("model.decoder", 1, d_model=d_model, heads=heads, num_layers=num_layers, ff_size=ff_size)
        require_at_least("model.decoder", 0, memory_layers=memory_layers)
        require_at_least("model.decoder", 1, max_positions=max_positions)
        if d_model % heads:
            raise ValueError(f"model.decoder.d_model ({d_model}) must be a multiple of model.decoder.heads ({heads})")
        require_fraction("model.decoder", dropout=dropout)
        if positions not in POSITIONS:
            raise ValueError(f"model.decoder.positions must be one of {', '.join(POSITIONS)}, got {positions!r}")
        self.vocab_size, self.d_model, self.heads = vocab_size, d_model, heads
        self.recurrent_count = 2 * num_layers  # each layer's self-attention keys and values
        self.grid_in = nn.Linear(grid_dim, d_model)
        self.pooled_in = nn.Linear(feature_dim, d_model)
        self.memory_layers = nn.ModuleList(EncoderLayer(d_model, heads, ff_size, dropout) for _ in range(memory_layers))
        self.memory_norm = nn.LayerNorm(d_model)
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=0)
        self.positions = POSITIONS[positions](d_model, max_positions)
        self.layers = nn.ModuleList(DecoderLayer(d_model, heads, ff_size, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(d_model)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(d_model, vocab_size)
        for parameter in self.parameters():  # Glorot, as the Annotated Transformer and ruotianluo's
            if parameter.dim() > 1:
                nn.init.xavier_uniform_(parameter)
        with torch.no_grad():
            self.embed.weight[0].zero_()
        if tie_embeddings:
            self.project.weight = self.embed.weight  # (V, D): one matrix reads and writes words

    def init_state(self, memory: Features) -> GridState:
        """The memory encoded once, every layer's cross-attention keys and values (B, heads, M, d_head) from it, and
        empty self-attention caches (B, heads, 0, d_head)."""
        grid, mask = masked_grid(memory)  # (B, N, C), (B, N) or None
        tokens = torch.cat([self.grid_in(grid), self.pooled_in(memory.pooled.to(grid.dtype)).unsqueeze(1)], dim=1)
        tokens = self.dropout(F.relu(tokens))  # (B, M = N + 1, D)
        mask = None if mask is None else F.pad(mask, (0, 1), value=True)  # the pooled token is always real
        allowed = None if mask is None else mask[:, None, None, :]
        for layer in self.memory_layers:
            tokens = layer(tokens, allowed)
        tokens = self.memory_norm(tokens)
        cross = tuple(kv for layer in self.layers for kv in layer.cross_attention.keys_values(tokens))
        empty = tokens.new_zeros(tokens.size(0), self.heads, 0, self.d_model // self.heads)
        return GridState((empty,) * self.recurrent_count, cross, mask=mask)

    def decode(self, words: torch.Tensor, state: GridState) -> tuple[torch.Tensor, torch.Tensor, GridState]:
        """Embedded words (R, T, D) at the T positions after the state's cached ones -> hidden states (R, T, D), the
        last layer's cross-attention over the grid cells, averaged over heads (R, T, N), and the state with them."""
        T, past = words.size(1), state.recurrent[0].size(2)
        limit = self.positions.limit
        if limit is not None and past + T > limit and not torch.jit.is_tracing():
            raise ValueError(f"learned positions end at {limit} tokens (model.decoder.max_positions); "
                             f"this caption needs {past + T}")
        positions = torch.arange(T, device=words.device) + past
        x = self.dropout(words * math.sqrt(self.d_model) + self.positions(positions).to(words.dtype))
        causal = None
        if T > 1:  # position i sees the cached words and itself: keys 0 .. past + i
            causal = torch.ones(T, past + T, dtype=torch.bool, device=words.device).tril(past)
        memory, mask = state.rows_memory(), state.rows_mask()
        allowed = None if mask is None else mask[:, None, None, :]
        caches = []
        for index, layer in enumerate(self.layers):
            x, past_kv, weights = layer(x, state.recurrent[2 * index: 2 * index + 2],
                                        memory[2 * index: 2 * index + 2], causal, allowed)
            caches += past_kv
        cells = weights[..., :-1].mean(dim=1)  # (R, T, N): the pooled token's share is left out
        return self.norm(x), cells, state.advance(tuple(caches))

    def advance(self, words: torch.Tensor, state: GridState) -> tuple[torch.Tensor, torch.Tensor, GridState]:
        """Embedded words (R, D) -> the hidden state that predicts the next word (R, D), weights (R, N), the state."""
        hidden, weights, state = self.decode(words.unsqueeze(1), state)
        return hidden.squeeze(1), weights.squeeze(1), state

    def teacher_forced(self, memory: Features, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, T) -> hidden states (B, T - 1, D) and grid weights (B, T - 1, N), all positions at once; the
        memory of an image that several rows caption (data.sampling=grouped) is encoded once."""
        distinct, image = distinct_images(memory)
        state = self.init_state(distinct)
        if image is not None:
            state = state.reorder(image)  # row i reads its image's memory
        hidden, weights, _ = self.decode(self.embed(tokens[:, :-1]), state)
        return hidden, weights

    def logits_at_targets(self, hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.project(hidden[tokens[:, 1:] != 0])  # (N, V); the layers' own dropout is enough
