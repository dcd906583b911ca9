"""Typed, validated options: `check_options(cfg, command)` runs first in every entry point (`captioning.tasks`)
and stops a bad value before any file is read or written, with one line that names the key, the value and what
is allowed: `train.grad_clip=-1: expected a number > 0 or null`.

The option types are built here; the tables that give every option of every command its type live in
option_tables.py. Model parts and data sources are specs, checked by their registries (argument types come
from the constructors' annotations). Keys a composition does not have
(data.frames with image data) are skipped; unknown keys are refused by Hydra's struct mode before this runs.
"""
from __future__ import annotations

import math
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
    from captioning.option_tables import DEVICE_KEY, SCHEMAS

    for key, option in SCHEMAS[command].items():
        value = value_of(cfg, key)
        if value is not _ABSENT and not option.accepts(value):
            raise OptionError(f"{key}={show(value)}: expected {option.expected}")
    if command in DEVICE_KEY:  # export runs on the CPU
        check_device(cfg, DEVICE_KEY[command])
    for rule in RULES.get(command, ()):
        rule(cfg)
