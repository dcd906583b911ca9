"""Data sources by name: `read_source({"name": "coco", **arguments})` -> `{split: [records]}`.

A source spec comes from `data.source` in a config, or from a data config saved in a checkpoint,
so it goes through the registry's check: only a registered name, only that source's arguments,
only plain values. Each module below registers its sources when imported.
"""
from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf

import captioning.config  # noqa: F401  (a data config's `${source:NAME}` spec resolves wherever sources are read)
from captioning.data.sources import clips, coco, flickr, karpathy, synthetic  # noqa: F401  (register the sources)
from captioning.data.sources.registry import SOURCES
from captioning.data.sources.synthetic import GENERATED


def read_source(spec: Any, where: str = "data.source", allow_outside_root: bool = False,
                generate: bool = True) -> dict[str, list]:
    """Check `spec` and read the source it names -> {split: [CaptionRecord or ClipRecord]}.

    `allow_outside_root` (data.allow_outside_root) lets file names in the data files leave the image folder;
    it is an argument of every source, given here and never by the spec (a spec may come from a file).
    `generate=False` (a spec read from a file): a generated data set is read if it is there, never generated.
    """
    if OmegaConf.is_config(spec):
        spec = OmegaConf.to_container(spec, resolve=True)
    generated = isinstance(spec, dict) and spec.get("name") in GENERATED
    return SOURCES.build(spec, where, allow_outside_root=allow_outside_root,
                         **({"generate": generate} if generated else {}))
