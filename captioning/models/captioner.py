"""Encoder + decoder, and rebuilding one from the model config stored in a checkpoint."""
from __future__ import annotations

import torch
from hydra.utils import instantiate
from torch import nn

from captioning.models.decoder import LSTMDecoder
from captioning.models.encoders import ImageEncoder


class CaptionModel(nn.Module):
    def __init__(self, encoder: ImageEncoder, decoder: LSTMDecoder):
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W), tokens (B, T) -> next-word logits (B, T, V)."""
        return self.decoder(self.encoder(images), tokens)


def build_model(model_config: dict, vocab_size: int, pretrained: bool = True) -> CaptionModel:
    """`model_config` = {encoder: {_target_, ...}, decoder: {_target_, ...}} as in `conf/model`.

    `pretrained=False` skips downloading or reading encoder weights, for when a checkpoint's
    state dict is loaded next.
    """
    encoder = instantiate(model_config["encoder"], **({} if pretrained else {"pretrained": False}))
    decoder = instantiate(model_config["decoder"], vocab_size=vocab_size, feature_dim=encoder.out_dim)
    return CaptionModel(encoder, decoder)
