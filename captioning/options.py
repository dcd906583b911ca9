"""Typed, validated options: `check_options(cfg, command)` runs first in every entry point (`captioning.tasks`)
and stops a bad value before any file is read or written, with one line that names the key, the value and what
is allowed: `train.grad_clip=-1: expected a number > 0 or null`.

The tables below type every option of conf/train.yaml (every task and data group), conf/evaluate.yaml,
conf/caption.yaml and conf/extract_features.yaml. Model parts and data sources are specs, checked by their
registries (argument types come from the constructors' annotations). Keys a composition does not have
(data.frames with image data) are skipped; unknown keys are refused by Hydra's struct mode before this runs.
"""
from __future__ import annotations

import math
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from captioning.registry import plain


class OptionError(ValueError):
    """A config value of the wrong type or outside its allowed values, or a mandatory value left unset."""


@dataclass(frozen=True)
class Option:
    expected: str                    # what is allowed, as the error message says it
    accepts: Callable[[Any], bool]   # on the resolved value as plain data (lists, not ListConfig)


def show(value: Any) -> str:
    """A value as it would be written on the command line (strings quoted, so `'3'` is not mistaken for 3)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _nullable(option: Option, null: bool) -> Option:
    return Option(f"{option.expected} or null", lambda v: v is None or option.accepts(v)) if null else option


def integer(low: int | None = None, high: int | None = None, null: bool = False) -> Option:
    bound = f" in {low}..{high}" if high is not None else f" >= {low}" if low is not None else ""
    return _nullable(Option(f"an integer{bound}", lambda v: _is_int(v) and (low is None or v >= low)
                            and (high is None or v <= high)), null)


def number(low: float | None = None, above: float | None = None, null: bool = False) -> Option:
    """A finite int or float (not a bool); `low` is inclusive, `above` exclusive."""
    bound = f" > {above}" if above is not None else f" >= {low}" if low is not None else ""
    return _nullable(Option(f"a number{bound}", lambda v: _is_number(v) and (low is None or v >= low)
                            and (above is None or v > above)), null)


def text() -> Option:
    return Option("a string", lambda v: isinstance(v, str) and v != "")


def path(null: bool = False) -> Option:
    return _nullable(Option("a path", lambda v: isinstance(v, str) and v != ""), null)


def existing_file(null: bool = False) -> Option:
    return _nullable(Option("an existing file", lambda v: isinstance(v, str) and Path(v).is_file()), null)


def one_of(*choices: Any) -> Option:
    """A closed set; `True` and 1 are different values here."""
    return Option(f"one of {' | '.join(c if isinstance(c, str) else show(c) for c in choices)}",
                  lambda v: any(type(v) is type(c) and v == c for c in choices))


def list_of(item: Option, what: str) -> Option:
    return Option(f"a non-empty list of {what}",
                  lambda v: isinstance(v, list) and bool(v) and all(map(item.accepts, v)))


def any_of(*options: Option) -> Option:
    return Option(" or ".join(o.expected for o in options), lambda v: any(o.accepts(v) for o in options))


BOOL = Option("true or false", lambda v: isinstance(v, bool))
DEVICE = Option("auto | cpu | cuda | cuda:N",
                lambda v: isinstance(v, str) and bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?", v)))
AMP = one_of("auto", "bf16", "fp16", "off")
JAVA = Option("auto | none | a java executable (a path, or a name on PATH)",
              lambda v: isinstance(v, str) and (v in ("auto", "none") or shutil.which(v) is not None))
SPLITS = ("train", "val", "test", "restval")  # restval: Karpathy's, with data.restval_as_train=false

DATA = {  # conf/common/data_options.yaml and the data groups (conf/data/*.yaml); data.source: its registry
    "data.name": text(),
    "data.on_bad_image": one_of("error", "skip"),
    "data.on_bad_caption": one_of("error", "skip"),
    "data.verify_images": one_of("none", "header", "full"),
    "data.allow_outside_root": BOOL,
    "data.max_image_pixels": integer(0, null=True),                       # 0 or null: no limit
    "data.jpeg_draft": BOOL,
    "data.sampling": one_of("random_caption", "pairs"),
    "data.augment.hflip": BOOL,
    "data.augment.random_resized_crop": BOOL,
    "data.augment.color_jitter": number(low=0),
    "data.features": path(null=True),
    "data.extract_features": BOOL,
    "data.num_workers": integer(0),
    "data.pin_memory": one_of("auto", True, False),
    "data.frames": integer(1),                                            # clip data
    "data.keep_in_memory": BOOL,                                          # clip data
    "data.captions_file": path(), "data.image_dir": path(), "data.split_file": path(null=True),     # flickr
    "data.dataset_json": path(), "data.image_root": path(), "data.restval_as_train": BOOL,          # karpathy
    **{f"data.{split}.{key}": path(null=True)                                                       # coco, clips
       for split in ("train", "val", "test") for key in ("annotations", "images", "clips", "labels")},
}

DECODE = {  # conf/decode/default.yaml
    "decode.beam_size": integer(1),
    "decode.n_best": integer(1),                                          # and <= decode.beam_size
    "decode.max_words": integer(1, null=True),
    "decode.min_words": integer(0),                                       # and <= decode.max_words
    "decode.length_penalty": one_of("none", "avg", "gnmt"),
    "decode.alpha": number(),
    "decode.forbid_unk": BOOL,
    "decode.block_ngram_repeat": integer(0), "decode.diversity_strength": number(low=0),
    "decode.diversity_groups": integer(1),                                # and a divisor of decode.beam_size
    "decode.top_p": Option("null or a number in (0, 1]", lambda v: v is None or (_is_number(v) and 0 < v <= 1)),
    "decode.temperature": number(above=0), "decode.seed": integer(0, 2**32 - 1),
}

TRAIN = {  # conf/train.yaml, conf/train/, conf/optim/, conf/scheduler/ (model.*: the registries)
    "seed": integer(0, 2**32 - 1),
    "run_dir": path(null=True),
    "vocab.min_count": integer(1),
    "vocab.max_words": integer(1),
    "train.epochs": integer(1),
    "train.max_steps": integer(1, null=True),
    "train.batch_size": integer(1),
    "train.bucket_pool": integer(0),
    "train.device": DEVICE,
    "train.amp": AMP,
    "train.grad_clip": number(above=0, null=True),
    "train.encoder_lr": number(low=0, null=True),
    "train.select_metric": text(),                                        # and a metric of the task
    "train.init_from": existing_file(null=True),
    "train.resume": existing_file(null=True),
    "train.log_every": integer(1),
    "train.checkpoint_every": integer(1, null=True),
    "train.show_examples": integer(0),
    "train.evaluate_test": BOOL,
    "train.overwrite": BOOL,
    "train.objective": one_of("xe", "scst"),
    "train.scst.samples": integer(1),
    "train.scst.baseline": one_of("greedy", "mean"),
    "train.scst.temperature": number(above=0),
    "optim.lr": number(above=0),
    "optim.weight_decay": number(low=0),
    "optim.momentum": number(low=0),
    "optim.fused": BOOL,
    "scheduler.interval": one_of("epoch", "step"),
    "scheduler.build.step_size": integer(1),
    "scheduler.build.gamma": number(above=0),
    "scheduler.build.T_max": integer(1),
    "scheduler.build.eta_min": number(low=0),
}

EVALUATE = {  # conf/evaluate.yaml
    "checkpoint": any_of(existing_file(null=True), list_of(existing_file(), "existing files")),  # null: results mode
    "split": one_of(*SPLITS),
    "device": DEVICE,
    "batch_size": integer(1),
    "max_images": integer(1, null=True),
    "results": existing_file(null=True),
    "annotations": existing_file(null=True),
    "allow_partial": BOOL,
    "java": JAVA,
    "spice": one_of("auto", True, False),
    "meteor": one_of("required", "optional"),
    "output_dir": path(),
    "overwrite": BOOL,
}

CAPTION = {  # conf/caption.yaml
    "checkpoint": any_of(existing_file(), list_of(existing_file(), "existing files")),  # a list: an ensemble
    "images": any_of(path(), list_of(path(), "paths")),
    "batch_size": integer(1),
    "device": DEVICE,
    "output": path(null=True),
    "overwrite": BOOL,
    "attention_maps": path(null=True),
}

EXTRACT = {  # conf/extract_features.yaml (model.encoder: its registry)
    "output": path(),
    "splits": list_of(one_of(*SPLITS), " | ".join(SPLITS)),
    "batch_size": integer(1),
    "device": DEVICE,
    "amp": AMP, "dtype": one_of("float16", "float32"),
    "store_grid": BOOL, "decode_on_device": one_of("auto", True, False),
}
EXPORT = {"checkpoint": existing_file(), "output": path(), "opset": integer(14, 21), "overwrite": BOOL}  # conf/export.yaml

SCHEMAS = {"train": {**TRAIN, **DATA, **DECODE}, "evaluate": {**EVALUATE, **DATA, **DECODE},
           "caption": {**CAPTION, **DECODE}, "extract": {**EXTRACT, **DATA}, "export": EXPORT}
DEVICE_KEY = {"train": "train.device", "evaluate": "device", "caption": "device", "extract": "device"}


# ---------------------------------------------------------------- checks across keys, and the specs


def check_device(cfg: DictConfig, key: str) -> None:
    name = OmegaConf.select(cfg, key)
    if name.startswith("cuda"):
        import torch

        index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise OptionError(f"{key}={show(name)}: this machine has {count} CUDA devices; expected auto | cpu"
                              + (" | cuda:N with N below that" if count else ""))


def check_decode(cfg: DictConfig) -> None:
    d = cfg.decode
    for broken, key, expected in (
            (d.top_p is not None and d.diversity_groups > 1, "diversity_groups", "1 with decode.top_p set (sampling)"),
            (d.beam_size % d.diversity_groups, "diversity_groups", f"a divisor of decode.beam_size={d.beam_size}"),
            (d.n_best > d.beam_size and d.top_p is None, "n_best", f"an integer in 1..{d.beam_size} (decode.beam_size)"),
            (d.max_words is not None and d.min_words > d.max_words, "min_words",
             f"an integer in 0..{d.max_words} (decode.max_words)")):
        if broken:
            raise OptionError(f"decode.{key}={d[key]}: expected {expected}")


def check_encoder(cfg: DictConfig) -> None:
    from captioning.models.encoders import ENCODERS

    ENCODERS.check(plain(cfg.model.encoder), "model.encoder")


def check_source(cfg: DictConfig) -> None:
    from captioning.data.sources import SOURCES

    if cfg.get("data") is not None:
        SOURCES.check(plain(cfg.data.source), "data.source")


RULES = {"train": (check_decode, check_source),  # the task-dependent checks: captioning.tasks.check_task
         "evaluate": (check_decode, check_source),
         "caption": (check_decode,), "extract": (check_encoder, check_source)}


# ---------------------------------------------------------------- the check


def missing_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys left at Hydra's `???` in an unresolved container (Hydra's own `hydra.` keys aside)."""
    if isinstance(node, dict):
        return [key for name, value in node.items() if not (prefix == "" and name == "hydra")
                for key in missing_keys(value, f"{prefix}.{name}" if prefix else str(name))]
    if isinstance(node, list):
        return [key for index, value in enumerate(node) for key in missing_keys(value, f"{prefix}[{index}]")]
    return [prefix] if node == "???" else []


_ABSENT = object()


def value_of(cfg: DictConfig, key: str) -> Any:
    """The resolved value at `key` as plain data; `_ABSENT` when this composition has no such key."""
    try:
        return plain(OmegaConf.select(cfg, key, default=_ABSENT, throw_on_missing=True))
    except OmegaConfBaseException as error:  # an interpolation that does not resolve
        raise OptionError(f"{key}: {str(error).splitlines()[0]}") from None


def check_options(cfg: DictConfig, command: str) -> None:
    """Refuse (OptionError, SpecError) a composed config of `command` (a key of SCHEMAS) with a mandatory value
    unset, a value of the wrong type or outside its allowed values, or a bad model/data spec."""
    missing = missing_keys(OmegaConf.to_container(cfg, resolve=False))
    if missing:
        raise OptionError(f"Missing mandatory value: {', '.join(missing)} (give {missing[0]}=... on the command line)")
    for key, option in SCHEMAS[command].items():
        value = value_of(cfg, key)
        if value is not _ABSENT and not option.accepts(value):
            raise OptionError(f"{key}={show(value)}: expected {option.expected}")
    if command in DEVICE_KEY:  # export runs on the CPU
        check_device(cfg, DEVICE_KEY[command])
    for rule in RULES.get(command, ()):
        rule(cfg)
