"""The LSTM caption decoder (Show and Tell): the pooled image vector starts the LSTM."""
from __future__ import annotations

import torch
from torch import nn

from captioning.data.batches import Features
from captioning.models.decoders.base import DECODERS, CaptionDecoder
from captioning.registry import require_at_least, require_fraction

State = tuple[torch.Tensor, torch.Tensor]  # (h, c), each (num_layers, B, hidden_size)


@DECODERS.register("lstm")
class LSTMDecoder(CaptionDecoder):
    """Word embedding -> LSTM -> vocabulary logits, conditioned on one image feature vector.

    image_input="init": a linear map of the feature sets the LSTM's initial hidden and cell states.
    image_input="first_step": the projected feature is the LSTM's first input (Vinyals et al. 2015),
    and `<start>` comes second. Either way `init_state` returns the state from which the first
    word is predicted, so decoding code never needs to know which mode is used.
    """

    def __init__(self, vocab_size: int, feature_dim: int, embed_size: int = 512, hidden_size: int = 512,
                 num_layers: int = 1, dropout: float = 0.0, image_input: str = "init"):
        super().__init__()
        if image_input not in ("init", "first_step"):
            raise ValueError(f"model.decoder.image_input must be 'init' or 'first_step', got {image_input!r}")
        require_at_least("model.decoder", 1, embed_size=embed_size, hidden_size=hidden_size, num_layers=num_layers)
        require_fraction("model.decoder", dropout=dropout)
        self.vocab_size, self.hidden_size, self.num_layers = vocab_size, hidden_size, num_layers
        self.image_input = image_input
        self.embed = nn.Embedding(vocab_size, embed_size, padding_idx=0)
        self.lstm = nn.LSTM(embed_size, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)
        self.dropout = nn.Dropout(dropout)
        self.project = nn.Linear(hidden_size, vocab_size)
        if image_input == "init":
            self.init_h = nn.Linear(feature_dim, num_layers * hidden_size)
            self.init_c = nn.Linear(feature_dim, num_layers * hidden_size)
        else:
            self.image_embed = nn.Linear(feature_dim, embed_size)

    def init_state(self, memory: Features) -> State:
        return self.start_state(memory.pooled)

    def start_state(self, features: torch.Tensor) -> State:  # features (B, D)
        B = features.size(0)
        if self.image_input == "init":
            h = torch.tanh(self.init_h(features)).view(B, self.num_layers, self.hidden_size).transpose(0, 1)
            c = self.init_c(features).view(B, self.num_layers, self.hidden_size).transpose(0, 1)
            return h.contiguous(), c.contiguous()
        image = self.dropout(self.image_embed(features)).unsqueeze(1)  # (B, 1, E)
        _, state = self.lstm(image)
        return state

    def target_logits(self, memory: Features, tokens: torch.Tensor) -> torch.Tensor:
        return self.teacher_forced(memory.pooled, tokens)

    def teacher_forced(self, features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """features (B, D), tokens (B, T) starting with `<start>` -> logits (N, V) at the real next-word targets.

        Only positions whose next token is a word, not padding, are projected, in row-major order
        (`tokens[:, 1:][tokens[:, 1:] != 0]` are their targets). The vocabulary projection is most of
        the step's cost: skipping padding and the last position makes the step about 1.7x faster at
        a 10,000-word vocabulary.
        """
        state = self.start_state(features)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        out, _ = self.lstm(self.dropout(self.embed(inputs)), state)  # (B, T - 1, H)
        return self.project(self.dropout(out[targets != 0]))  # (N, V)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        """One decoding step: tokens (B,) -> log-probabilities (B, V) and the new state."""
        out, state = self.lstm(self.embed(tokens).unsqueeze(1), state)  # (B, 1, H)
        return torch.log_softmax(self.project(out.squeeze(1)).float(), dim=-1), state

    def reorder_state(self, state: State, rows: torch.Tensor) -> State:
        return tuple(s.index_select(1, rows) for s in state)  # the batch is dim 1 of (h, c)

    def export_state(self, state: State) -> tuple[torch.Tensor, torch.Tensor]:
        return tuple(s.transpose(0, 1) for s in state)  # (B, num_layers, H) each

    def import_state(self, tensors: tuple[torch.Tensor, ...]) -> State:
        h, c = tensors
        return h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous()
