"""The entry points other than training (conf/*.yaml): evaluate, caption, export, demo, extract_features,
pack_region_features, compare, folds, benchmark, benchmark_decoding and the scale rehearsal (conf/scale.yaml)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from captioning.config.choices import Amp, Auto, Dtype, MeanMetric, ScstBaseline, Split, closed_set
from captioning.config.data import DataOptions, Sampling
from captioning.config.fields import KINDS, OptionError, any_of, check_node, list_of, nullable, option
from captioning.config.train import SEED, Decode, validate_scst

FILES = any_of(KINDS["file"], list_of(KINDS["file"], "existing files"))   # one checkpoint, or an ensemble
PATHS = any_of(KINDS["path"], list_of(KINDS["path"], "paths"))


Meteor = closed_set("Meteor", "required", "optional")


@dataclass
class EvaluateConfig:
    """conf/evaluate.yaml: checkpoint mode (checkpoint, split, data, decode) or results mode (results, annotations)."""
    checkpoint: Any = option(accepts=any_of(nullable(KINDS["file"]), list_of(KINDS["file"], "existing files")))
    split: Split = option()
    data: Optional[DataOptions] = option()        # null: the data config saved in the checkpoint
    device: str = option(kind="device")
    batch_size: int = option(ge=1)
    max_images: Optional[int] = option(ge=1)
    results: Optional[str] = option(kind="file")
    annotations: Optional[str] = option(kind="file")
    allow_partial: bool = option()
    java: str = option(kind="java")
    spice: Auto = option()
    meteor: Meteor = option()
    output_dir: str = option(kind="path")
    overwrite: bool = option()
    allow_hub_model: Optional[str] = option()    # the one hub/URL encoder a checkpoint may name (fetched)
    decode: Decode = option()


@dataclass
class CaptionConfig:
    """conf/caption.yaml."""
    checkpoint: Any = option(accepts=FILES)
    images: Any = option(accepts=PATHS)
    batch_size: int = option(ge=1)
    device: str = option(kind="device")
    output: Optional[str] = option(kind="path")
    overwrite: bool = option()
    attention_maps: Optional[str] = option(kind="path")
    allow_hub_model: Optional[str] = option()    # the one hub/URL encoder a checkpoint may name (fetched)
    decode: Decode = option()


@dataclass
class ExtractConfig:
    """conf/extract_features.yaml (model.encoder: its registry)."""
    output: str = option(kind="path")
    splits: list[Split] = option(items="train | val | test | restval")
    batch_size: int = option(ge=1)
    device: str = option(kind="device")
    amp: Amp = option()
    dtype: Dtype = option()
    store_grid: bool = option()
    decode_on_device: Auto = option()
    data: DataOptions = option()
    model: Any = option(spec=True)


@dataclass
class PackRegionsConfig:
    """conf/pack_region_features.yaml (data: optional, the source whose image ids are checked)."""
    input: str = option(kind="path")
    output: str = option(kind="path")
    pooled: Optional[str] = option(kind="path")
    boxes: Optional[str] = option(kind="path")
    dtype: Dtype = option()
    overwrite: bool = option()
    data: Optional[DataOptions] = option()


@dataclass
class ExportConfig:
    """conf/export.yaml."""
    checkpoint: str = option(kind="file")
    output: str = option(kind="path")
    opset: int = option(ge=14, le=21)
    overwrite: bool = option()


@dataclass
class DemoConfig:
    """conf/demo.yaml."""
    checkpoint: Any = option(accepts=FILES)
    host: str = option()
    port: int = option(ge=1, le=65535)
    device: str = option(kind="device")
    examples: Any = option(accepts=any_of(nullable(KINDS["path"]), list_of(KINDS["path"], "paths")))
    max_upload_mb: int = option(ge=1)
    max_image_pixels: Optional[int] = option(ge=1)
    allow_hub_model: Optional[str] = option()    # the one hub/URL encoder a checkpoint may name (fetched)


@dataclass
class CompareConfig:
    """conf/compare.yaml."""
    base: Any = option(accepts=PATHS)
    other: Any = option(accepts=PATHS)
    metric: MeanMetric = option()
    samples: int = option(ge=100)
    confidence: float = option(gt=0, lt=1)
    seed: int = option(**SEED)
    output: Optional[str] = option(kind="path")


@dataclass
class FoldsConfig:
    """conf/folds.yaml."""
    folds: Any = option(accepts=PATHS)            # the five fold folders (one alone is refused: folds 0..4)
    output_dir: str = option(kind="path")
    java: str = option(kind="java")
    spice: Auto = option()
    meteor: Meteor = option()
    overwrite: bool = option()


RowSource = closed_set("RowSource", "disk", "device", "memory")


@dataclass
class ExtractionRow:
    encoder: Any = option(spec=True)
    source: RowSource = option()
    images: int = option(ge=1)
    batch_size: int = option(ge=1)


@dataclass
class BenchScst:
    decoders: list[str] = option(items="decoder names", empty=True)
    images: int = option(ge=1)
    batch_size: int = option(ge=1)
    steps: int = option(ge=1)
    samples: int = option(ge=1)
    baseline: ScstBaseline = option()
    micro_batch: int = option(ge=1)


@dataclass
class BenchmarkConfig:
    """conf/benchmark.yaml and conf/bench/*.yaml; encoder specs and decoder names: their registries."""
    device: str = option(kind="device")
    amp: Amp = option()
    output: Optional[str] = option(kind="path")
    image_dir: Optional[str] = option(kind="path")
    vocab_size: int = option(ge=5)
    hidden_size: int = option(ge=1)
    bucket_pool: int = option(ge=0)
    sampling: Sampling = option()
    images: int = option(ge=1)
    warmup: int = option(ge=0)
    cached_batch_sizes: list[int] = option(ge=1, items="integers >= 1")
    cached_steps: int = option(ge=1)
    image_batch_size: int = option(ge=1)
    image_steps: int = option(ge=1)
    num_workers: int = option(ge=0)
    encoder: Any = option(spec=True)
    also_frozen: Any = option(spec=True)
    grid_decoders: list[str] = option(items="decoder names", empty=True)
    scst: BenchScst = option()
    extraction: Any = option(spec=True)           # rows of ExtractionRow (validate_benchmark)


@dataclass
class BenchmarkDecodingConfig:
    """conf/benchmark_decoding.yaml (and its decode and data groups)."""
    checkpoint: str = option(kind="file")
    images: Any = option(accepts=any_of(nullable(KINDS["path"]), list_of(KINDS["path"], "paths")))
    num_images: int = option(ge=1)
    device: str = option(kind="device")
    beam_sizes: list[int] = option(ge=1, items="integers >= 1")
    batch_sizes: list[int] = option(ge=1, items="integers >= 1")
    cuda_batch_sizes: list[int] = option(ge=1, items="integers >= 1")
    seconds: float = option(gt=0)
    repeats: int = option(ge=1)
    loop: bool = option()
    output: Optional[str] = option(kind="path")
    decode: Decode = option()
    data: DataOptions = option()


StorePath = closed_set("StorePath", "streamed", "in_memory")


@dataclass
class ScaleConfig:
    """conf/scale.yaml (python -m benchmarks.scale); decoder names: their registry."""
    scale: float = option(gt=0)
    scratch: str = option(kind="path")
    decoders: list[str] = option(items="decoder names")
    paths: list[StorePath] = option(items="streamed | in_memory")
    batch_size: int = option(ge=1)
    steps: int = option(ge=1)
    warmup: int = option(ge=0)
    hidden_size: int = option(ge=1)
    width: int = option(ge=1)
    cells: int = option(ge=1)
    max_words: int = option(ge=1)
    min_count: int = option(ge=1)
    reward_captions: int = option(ge=1)
    regions: float = option(ge=0, le=1)
    java: str = option(kind="java")
    threads: int = option(ge=1)
    output: Optional[str] = option(kind="path")
    device: str = option(kind="device")


def check_decoders(names: list, key: str) -> None:
    from captioning.models.decoders import DECODERS

    for index, name in enumerate(names or []):
        DECODERS.get(name, f"{key}[{index}]")


def validate_benchmark(cfg: dict) -> None:
    """Encoder specs and decoder names against their registries, the extraction rows, a baseline its samples allow."""
    from captioning.models.encoders import ENCODERS

    ENCODERS.check(cfg["encoder"], "encoder", supplied=("trainable",))
    for index, spec in enumerate(cfg.get("also_frozen") or []):
        ENCODERS.check(spec, f"also_frozen[{index}]", supplied=("trainable",))
    check_decoders(cfg["grid_decoders"], "grid_decoders")
    check_decoders(cfg["scst"]["decoders"], "scst.decoders")
    for index, row in enumerate(cfg.get("extraction") or []):
        where = f"extraction[{index}]"
        if not isinstance(row, dict) or set(row) != {"encoder", "source", "images", "batch_size"}:
            raise OptionError(f"{where}: expected a mapping of encoder, source, images and batch_size")
        ENCODERS.check(row["encoder"], f"{where}.encoder", supplied=("trainable",))
        check_node(row, ExtractionRow, where)
    validate_scst(cfg["scst"], "scst")

