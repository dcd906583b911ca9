"""Caption decoders by name: `DECODERS.build({"name": "lstm", ...}, where, vocab_size=..., feature_dim=...)`."""
from captioning.models.decoders import lstm  # noqa: F401  (registers "lstm")
from captioning.models.decoders.base import DECODERS, CaptionDecoder

__all__ = ["DECODERS", "CaptionDecoder"]
