"""CNN-LSTM over frame sequences (LRCN, Donahue et al. 2015): the parts shared by activity recognition and description.

Any registered image encoder runs on every frame (time folded into the batch), an LSTM reads the
per-frame features over time, and either a classifier (`heads.py`) or a caption decoder reads its
summary. For description the clip vector (B, H) takes the place of the pooled image feature, so every
registered decoder, its `init_state`/`step`/`reorder_state`, and all decoding code work unchanged.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from captioning.data.batches import Clips, Features
from captioning.models.decoders.base import CaptionDecoder
from captioning.models.encoders import ImageEncoder
from captioning.registry import Registry, require_at_least, require_fraction

TEMPORAL = Registry("temporal model")


class TimeDistributed(nn.Module):
    """An image encoder on every real frame of a clip: Clips frames (B, T, C, H, W) -> Clips features (B, T, D).

    Only frames the mask marks real are encoded, so zero padding never reaches batch-norm statistics;
    padded positions get zero features.
    """

    def __init__(self, encoder: ImageEncoder):
        super().__init__()
        self.encoder = encoder
        self.out_dim, self.preprocess, self.trainable = encoder.out_dim, encoder.preprocess, encoder.trainable

    def forward(self, clips: Clips) -> Clips:
        B, T = clips.mask.shape
        out = self.encoder(clips.frames[clips.mask]).pooled  # (N, D), N = real frames in the batch: time folded into batch
        features = out.new_zeros(B, T, out.size(-1))
        features[clips.mask] = out
        return Clips(features, clips.mask)

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder}

    @staticmethod
    def from_cached(clips: Clips) -> Clips:
        """A batch of cached per-frame features is already what `forward` returns."""
        return clips


@TEMPORAL.register("lstm")
class TemporalLSTM(nn.Module):
    """An LSTM over per-frame features (B, T, D) -> one vector per clip (B, H).

    pooling="last": the hidden state after each clip's last real frame; "mean": the mean of the
    LSTM outputs over the real frames. Padded frames are skipped (packed sequences), not read.
    `input_norm` batch-normalises the frame features (over the real frames of the batch). Without
    it, features shared by every clip (a CNN's constant offset, or any pretrained feature's mean)
    let the optimiser saturate the LSTM gates within a few dozen steps: every clip then gets the
    same vector and a caption decoder learns to ignore it.
    """

    def __init__(self, input_dim: int, hidden_size: int = 256, num_layers: int = 1, dropout: float = 0.0,
                 pooling: str = "last", input_norm: bool = True):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"model.temporal.pooling must be 'last' or 'mean', got {pooling!r}")
        require_at_least("model.temporal", 1, hidden_size=hidden_size, num_layers=num_layers)
        require_fraction("model.temporal", dropout=dropout)
        self.pooling, self.out_dim = pooling, hidden_size
        self.norm = nn.BatchNorm1d(input_dim) if input_norm else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.lstm = nn.LSTM(input_dim, hidden_size, num_layers, batch_first=True,
                            dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, _ = features.shape
        lengths = mask.sum(1)  # (B,) real frames; the mask is a prefix, padding comes last
        real = self.norm(features[mask])  # (N, D): statistics over the real frames of the batch only
        normalised = real.new_zeros(B, T, real.size(-1))
        normalised[mask] = real
        packed = pack_padded_sequence(self.dropout(normalised), lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, (h, _) = self.lstm(packed)  # h (num_layers, B, H)
        if self.pooling == "last":
            return h[-1]
        outputs, _ = pad_packed_sequence(outputs, batch_first=True, total_length=T)  # (B, T, H), zeros past each end
        return outputs.sum(1) / lengths.unsqueeze(1).to(outputs.dtype)


class ClipCaptionDecoder(CaptionDecoder):
    """The temporal LSTM's clip vector (B, H) is the pooled feature that starts any registered caption decoder."""

    def __init__(self, temporal: TemporalLSTM, captioner: CaptionDecoder):
        super().__init__()
        self.temporal, self.captioner = temporal, captioner

    def parts(self) -> dict[str, nn.Module]:
        return {"temporal": self.temporal, "decoder": self.captioner}

    def summary(self, clips: Clips) -> Features:  # Clips features (B, T, D) -> Features pooled (B, H)
        return Features(self.temporal(clips.frames, clips.mask))

    def init_state(self, clips: Clips) -> Any:
        return self.captioner.init_state(self.summary(clips))

    def target_logits(self, clips: Clips, tokens: torch.Tensor) -> torch.Tensor:
        return self.captioner.target_logits(self.summary(clips), tokens)

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        return self.captioner.step(tokens, state)

    def reorder_state(self, state: Any, rows: torch.Tensor) -> Any:
        return self.captioner.reorder_state(state, rows)
