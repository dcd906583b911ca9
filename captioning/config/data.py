"""The data group (conf/data/*.yaml over conf/common/data_options.yaml): one schema per data source.

Each data key is written once, where users type it (`data.captions_file=...`, `data.train.annotations=...`). The
source spec that loaders and checkpoints read (`data.source`, `{"name": ..., **arguments}`) is either written out
(the synthetic sources: `data.source.num_train=...`) or made by the `${source:NAME}` resolver from the data keys
whose field says `source=True`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, make_dataclass
from typing import Any, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue

from captioning.config.choices import Auto, closed_set
from captioning.config.fields import OptionError, option, show

OnBad = closed_set("OnBad", "error", "skip")
Verify = closed_set("Verify", "none", "header", "full")
Sampling = closed_set("Sampling", "random_caption", "pairs", "grouped")


@dataclass
class Augment:
    hflip: bool = option()
    random_resized_crop: bool = option()
    color_jitter: float = option(ge=0)


@dataclass
class DataOptions:
    """conf/common/data_options.yaml: what every source shares."""
    name: str = option()
    on_bad_image: OnBad = option()
    on_bad_caption: OnBad = option()
    verify_images: Verify = option()
    allow_outside_root: bool = option()
    max_image_pixels: Optional[int] = option(ge=0)  # 0 or null: no limit
    jpeg_draft: bool = option()
    keep_in_memory: bool = option()
    sampling: Sampling = option()
    augment: Augment = option()
    features: Optional[str] = option(kind="path")
    extract_features: bool = option()
    features_in_memory: Auto = option()
    num_workers: int = option(ge=0)
    pin_memory: Auto = option()
    source: Any = option(spec=True)  # checked by the source registry (validate)


@dataclass
class ClipData(DataOptions):
    frames: int = option(ge=1)


@dataclass
class FlickrData(DataOptions):
    captions_file: str = option(kind="path", source=True)
    image_dir: str = option(kind="path", source=True)
    split_file: Optional[str] = option(kind="path", source=True)
    fold: Optional[int] = option(ge=0, le=4, source=True)  # one of the five folds; no split_file then (check_fold)


@dataclass
class KarpathyData(DataOptions):
    dataset_json: str = option(kind="path", source=True)
    image_root: str = option(kind="path", source=True)
    restval_as_train: bool = option(source=True)


@dataclass
class CocoSplit:
    annotations: Optional[str] = option(kind="path")
    images: Optional[str] = option(kind="path")


def with_splits(name: str, base: type, split: type) -> type:
    """A source's schema of `base` whose train and val keys hold a `split` each, and test one or null."""
    return make_dataclass(name, [(key, split, option(source=True)) for key in ("train", "val")]
                          + [("test", Optional[split], option(source=True))], bases=(base,),
                          namespace={"__module__": __name__})  # found again where it is named (pickled configs)


CocoData = with_splits("CocoData", DataOptions, CocoSplit)


@dataclass
class ClipSplit:
    clips: Optional[str] = option(kind="path")
    labels: Optional[str] = option(kind="path")
    annotations: Optional[str] = option(kind="path")


ClipsData = with_splits("ClipsData", ClipData, ClipSplit)


# the schema of each data group, by the registered source it reads (synthetic ones write their spec out)
DATA_SCHEMAS = {"flickr": FlickrData, "karpathy": KarpathyData, "coco": CocoData, "clips": ClipsData,
                "synthetic": DataOptions, "synthetic_clips": ClipData}


def source_fields(schema: type) -> list[str]:
    return [f.name for f in fields(schema) if f.metadata.get("source")]


def source_spec(name: str, _parent_: DictConfig) -> dict:
    """`${source:NAME}`: the spec of source NAME from the data keys beside it (a mandatory value left unset stays
    `???`, so the spec can be listed before it is filled)."""
    spec = {"name": name}
    for key in source_fields(DATA_SCHEMAS[name]):
        try:
            value = _parent_[key]
        except MissingMandatoryValue:
            value = "???"
        spec[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    return spec


OmegaConf.register_new_resolver("source", source_spec, replace=True)


def data_schema(data: dict) -> type:
    """The schema of a resolved data node: the one of the source it reads (a source registered elsewhere, e.g. a
    plugin's: the options every source shares, and clips')."""
    source = data.get("source")
    return DATA_SCHEMAS.get(source.get("name") if isinstance(source, dict) else None, ClipData)


def check_source(data: dict | None, key: str = "data.source") -> None:
    """The data source spec against its registry (registered name, its arguments and their types)."""
    if data is not None:
        from captioning.data.sources import SOURCES

        SOURCES.check(data.get("source"), key)


def check_fold(data: dict | None) -> None:
    """A fold cuts the images itself: a split file beside it would be a second, contradicting split."""
    if data is not None and data.get("fold") is not None and data.get("split_file"):
        raise OptionError(f"data.fold={show(data['fold'])}: the fold chooses the train, val and test images; "
                          f"expected data.split_file=null (it is {show(data['split_file'])})")
