"""CNN-LSTM over frame sequences (LRCN, Donahue et al. 2015): activity recognition and video description.

Any registered image encoder runs on every frame (time folded into the batch), an LSTM reads the
per-frame features over time, and either a classifier or the caption decoder reads its summary.
For description the summary (B, H) takes the place of the image feature, so `LSTMDecoder`, its
`init_state`/`step`, and all decoding code are used unchanged.
"""
from __future__ import annotations

import torch
from hydra.utils import instantiate
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from captioning.data.clip_dataset import Clips
from captioning.models.captioner import CaptionModel
from captioning.models.decoder import LSTMDecoder, State
from captioning.models.encoders import ImageEncoder


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
        out = self.encoder(clips.frames[clips.mask])  # (N, D), N = real frames in the batch: time folded into batch
        features = out.new_zeros(B, T, out.size(-1))
        features[clips.mask] = out
        return Clips(features, clips.mask)


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


class ClipClassifier(nn.Module):
    """Dropout and a linear layer: clip vector (B, H) -> class logits (B, K)."""

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, num_classes)

    def forward(self, clip_vectors: torch.Tensor) -> torch.Tensor:
        return self.linear(self.dropout(clip_vectors))


class ActivityHead(nn.Module):
    """Per-frame features -> class logits: the temporal LSTM, then the classifier."""

    def __init__(self, temporal: TemporalLSTM, classifier: ClipClassifier):
        super().__init__()
        self.temporal, self.classifier = temporal, classifier

    def forward(self, clips: Clips) -> torch.Tensor:  # Clips features (B, T, D) -> logits (B, K)
        return self.classifier(self.temporal(clips.frames, clips.mask))


class ActivityModel(nn.Module):
    """LRCN activity recognition: `encoder` (frames -> per-frame features) and `head` (features -> logits)."""

    def __init__(self, encoder: TimeDistributed, head: ActivityHead):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, clips: Clips) -> torch.Tensor:  # Clips frames (B, T, C, H, W) -> logits (B, K)
        return self.head(self.encoder(clips))


class ClipCaptionDecoder(nn.Module):
    """The temporal LSTM's clip vector (B, H) is the feature that initialises the unchanged caption decoder.

    Same interface as `LSTMDecoder` (forward, init_state, step) with Clips features in place of
    image features, so training, validation and beam search need no change.
    """

    def __init__(self, temporal: TemporalLSTM, captioner: LSTMDecoder):
        super().__init__()
        self.temporal, self.captioner = temporal, captioner

    def init_state(self, clips: Clips) -> State:  # Clips features (B, T, D)
        return self.captioner.init_state(self.temporal(clips.frames, clips.mask))

    def forward(self, clips: Clips, tokens: torch.Tensor, targets_only: bool = False) -> torch.Tensor:
        """tokens (B, L) -> logits (B, L, V), or (N, V) at the real targets: as `LSTMDecoder.forward`."""
        return self.captioner(self.temporal(clips.frames, clips.mask), tokens, targets_only)

    def step(self, tokens: torch.Tensor, state: State) -> tuple[torch.Tensor, State]:
        return self.captioner.step(tokens, state)


def _frame_encoder(model_config: dict, pretrained: bool) -> TimeDistributed:
    return TimeDistributed(instantiate(model_config["encoder"], **({} if pretrained else {"pretrained": False})))


def build_activity_model(model_config: dict, num_classes: int, pretrained: bool = True) -> ActivityModel:
    """`model_config` = {encoder, temporal, classifier} as in `conf/task/activity.yaml`."""
    encoder = _frame_encoder(model_config, pretrained)
    temporal = instantiate(model_config["temporal"], input_dim=encoder.out_dim)
    classifier = instantiate(model_config["classifier"], in_dim=temporal.out_dim, num_classes=num_classes)
    return ActivityModel(encoder, ActivityHead(temporal, classifier))


def build_video_caption_model(model_config: dict, vocab_size: int, pretrained: bool = True) -> CaptionModel:
    """`model_config` = {encoder, temporal, decoder} as in `conf/task/video_caption.yaml`."""
    encoder = _frame_encoder(model_config, pretrained)
    temporal = instantiate(model_config["temporal"], input_dim=encoder.out_dim)
    decoder = instantiate(model_config["decoder"], vocab_size=vocab_size, feature_dim=temporal.out_dim)
    return CaptionModel(encoder, ClipCaptionDecoder(temporal, decoder))
