"""Caption decoders by name: `DECODERS.build({"name": "lstm", ...}, where, vocab_size=..., feature_dim=...)`.

Every module in this folder is imported here, so a new decoder is one file (registering itself with
`@DECODERS.register("name")`) plus one config in conf/model/decoder/.
"""
import importlib
import pkgutil

from captioning.models.decoders.base import DECODERS, CaptionDecoder

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DECODERS", "CaptionDecoder"]
