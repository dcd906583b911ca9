"""LRCN activity recognition: per-frame features -> clip LSTM -> class logits."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from captioning.data.batches import Clips
from captioning.models.temporal import TemporalLSTM, TimeDistributed
from captioning.registry import Registry

HEADS = Registry("classifier")


@HEADS.register("linear")
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

    def parts(self) -> dict[str, nn.Module]:
        return {"encoder": self.encoder.encoder, "temporal": self.head.temporal, "classifier": self.head.classifier}

    def logits(self, inputs: Clips, cached: bool = False) -> torch.Tensor:
        """Clips frames (B, T, C, H, W), or per-frame features (B, T, D) when `cached` -> logits (B, K)."""
        return self.head(self.encoder.from_cached(inputs) if cached else self.encoder(inputs))

    def forward(self, inputs: Clips, labels: torch.Tensor, cached: bool = False) -> tuple[torch.Tensor, int]:
        """The summed cross-entropy of the true classes (B,), and how many terms: one module for DDP to wrap."""
        return F.cross_entropy(self.logits(inputs, cached).float(), labels, reduction="sum"), labels.numel()


