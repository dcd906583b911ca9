"""Typed, validated options: `check_options(cfg, command)` runs first in every entry point (`captioning.tasks`)
and stops a bad value before any file is read or written, with one line that names the key, the value and what
is allowed: `train.grad_clip=-1: expected a number > 0 or null`.

The option types live in option_types.py; the tables that give every option of every command its type in
option_tables.py. Model parts and data sources are specs, checked by their registries (argument types come
from the constructors' annotations). Keys a composition does not have
(data.frames with image data) are skipped; unknown keys are refused by Hydra's struct mode before this runs.
"""
from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from captioning.option_tables import DEVICE_KEY, SCHEMAS
from captioning.option_types import Option, OptionError, integer, one_of, show
from captioning.registry import plain

__all__ = ["Option", "OptionError", "check_options", "missing_keys", "show", "value_of"]  # the types are re-exported


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
    top_p, groups = d.get("top_p"), d.get("diversity_groups", 1)  # keys a hand-made config may leave out
    for broken, key, expected in (
            (top_p is not None and groups > 1, "diversity_groups", "1 with decode.top_p set (sampling)"),
            (d.beam_size % groups, "diversity_groups", f"a divisor of decode.beam_size={d.beam_size}"),
            (d.n_best > d.beam_size and top_p is None, "n_best", f"an integer in 1..{d.beam_size} (decode.beam_size)"),
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


def check_scst_samples(scst: DictConfig, prefix: str) -> None:
    """The mean-of-others baseline needs 2 samples per image (train.scst, and the benchmark's scst)."""
    if scst.baseline == "mean" and scst.samples < 2:
        raise OptionError(f"{prefix}.baseline=mean: needs {prefix}.samples >= 2 (the mean of the other samples)")


def check_benchmark(cfg: DictConfig) -> None:
    """The benchmark's encoder specs and decoder names against their registries, its extraction rows' keys, and a
    baseline its sample count allows."""
    from captioning.models.decoders import DECODERS
    from captioning.models.encoders import ENCODERS

    ENCODERS.check(plain(cfg.encoder), "encoder", supplied=("trainable",))
    for index, spec in enumerate(plain(cfg.get("also_frozen") or [])):
        ENCODERS.check(spec, f"also_frozen[{index}]", supplied=("trainable",))
    for key in ("grid_decoders", "scst.decoders"):
        for index, name in enumerate(value_of(cfg, key) or []):
            DECODERS.get(name, f"{key}[{index}]")
    for index, row in enumerate(plain(cfg.get("extraction") or [])):
        where = f"extraction[{index}]"
        if not isinstance(row, dict) or set(row) != {"encoder", "source", "images", "batch_size"}:
            raise OptionError(f"{where}: expected a mapping of encoder, source, images and batch_size")
        ENCODERS.check(row["encoder"], f"{where}.encoder", supplied=("trainable",))
        for key, option in (("source", one_of("disk", "device", "memory")), ("images", integer(1)),
                            ("batch_size", integer(1))):
            if not option.accepts(row[key]):
                raise OptionError(f"{where}.{key}={show(row[key])}: expected {option.expected}")
    check_scst_samples(cfg.scst, "scst")


def check_scale(cfg: DictConfig) -> None:
    """The scale rehearsal's decoders against their registry."""
    from captioning.models.decoders import DECODERS

    for index, name in enumerate(value_of(cfg, "decoders")):
        DECODERS.get(name, f"decoders[{index}]")


RULES = {"train": (check_decode, check_source),  # the task-dependent checks: captioning.tasks.check_task
         "evaluate": (check_decode, check_source),
         "caption": (check_decode,), "extract": (check_encoder, check_source), "pack_regions": (check_source,),
         "benchmark": (check_benchmark,), "scale": (check_scale,), "benchmark_decoding": (check_decode, check_source)}


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
