"""`check_options(cfg, command)`: the start-up check every entry point runs before any file is read or written.

It refuses, with one line naming the key and the value, a mandatory value left unset, an interpolation that does
not resolve, a key its schema does not declare, a value of the wrong type or outside its range, and a value that
breaks a rule across keys (each schema's validation). Model parts and data sources are specs, checked by their
registries (argument types come from the constructors' annotations).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from captioning.config.commands import (
    BenchmarkConfig,
    BenchmarkDecodingConfig,
    CaptionConfig,
    CompareConfig,
    DemoConfig,
    EvaluateConfig,
    ExportConfig,
    ExtractConfig,
    FoldsConfig,
    PackRegionsConfig,
    ScaleConfig,
    check_decoders,
    validate_benchmark,
)
from captioning.config.data import check_fold, check_source, data_schema
from captioning.config.fields import OptionError, check_node, show
from captioning.config.train import TrainConfig, validate_decode, validate_scst


def check_device(name: str, key: str) -> None:
    if name.startswith("cuda"):
        import torch

        index, count = int(name.partition(":")[2] or 0), torch.cuda.device_count()
        if index >= count:
            raise OptionError(f"{key}={show(name)}: this machine has {count} CUDA devices; expected auto | cpu"
                              + (" | cuda:N with N below that" if count else ""))


def validate_train(cfg: dict) -> None:
    """The rules of conf/train.yaml that need no task (check_task adds the task's)."""
    validate_decode(cfg["decode"])
    if cfg["train"].get("objective") == "scst":
        validate_scst(cfg["train"]["scst"], "train.scst")
        smoothing = cfg["train"].get("label_smoothing", 0.0)
        if smoothing > 0:  # the policy-gradient loss has no target distribution to smooth
            raise OptionError(f"train.label_smoothing={show(smoothing)}: smooths the cross-entropy loss only; "
                              "expected 0 with train.objective=scst")


def validate_data(cfg: dict) -> None:
    check_fold(cfg.get("data"))
    check_source(cfg.get("data"))


def validate_extract(cfg: dict) -> None:
    from captioning.models.encoders import ENCODERS

    ENCODERS.check(cfg["model"]["encoder"], "model.encoder")
    check_source(cfg["data"])


# command: (schema, the key naming its device or None, its validations in order)
COMMANDS: dict[str, tuple[type, str | None, tuple[Callable[[dict], None], ...]]] = {
    "train": (TrainConfig, "train.device", (validate_train, validate_data)),
    "evaluate": (EvaluateConfig, "device", (lambda cfg: validate_decode(cfg["decode"]), validate_data)),
    "caption": (CaptionConfig, "device", (lambda cfg: validate_decode(cfg["decode"]),)),
    "extract": (ExtractConfig, "device", (validate_extract,)),
    "pack_regions": (PackRegionsConfig, None, (validate_data,)),
    "export": (ExportConfig, None, ()),  # export runs on the CPU
    "demo": (DemoConfig, "device", ()),
    "benchmark": (BenchmarkConfig, "device", (validate_benchmark,)),
    "benchmark_decoding": (BenchmarkDecodingConfig, "device", (lambda cfg: validate_decode(cfg["decode"]),
                                                               validate_data)),
    "scale": (ScaleConfig, "device", (lambda cfg: check_decoders(cfg["decoders"], "decoders"),)),
    "compare": (CompareConfig, None, ()),
    "folds": (FoldsConfig, None, ()),
}


# `???` in a file merged over a key that already has a value (an experiment's `train.init_from: ???` over
# conf/train/default.yaml's null) is dropped by OmegaConf's merge, which keeps the earlier value: an SCST recipe then
# trained from random weights. Such a key is written `${mandatory:}` instead: it survives the merge, is named here
# with the other missing values, and fails loudly if anything resolves it unchecked.
MANDATORY = "${mandatory:}"


def _mandatory() -> Any:
    raise ValueError("a mandatory value (${mandatory:}) was not given on the command line")


OmegaConf.register_new_resolver("mandatory", _mandatory, replace=True)


def missing_keys(node: Any, prefix: str = "") -> list[str]:
    """Dotted keys left at Hydra's `???` (or `${mandatory:}`) in an unresolved container (Hydra's own `hydra.` keys
    aside)."""
    if isinstance(node, dict):
        return [key for name, value in node.items() if not (prefix == "" and name == "hydra")
                for key in missing_keys(value, f"{prefix}.{name}" if prefix else str(name))]
    if isinstance(node, list):
        return [key for index, value in enumerate(node) for key in missing_keys(value, f"{prefix}[{index}]")]
    return [prefix] if node in ("???", MANDATORY) else []


def resolved(node: Any, prefix: str = "") -> Any:
    """A config node as plain data, resolved key by key so that an interpolation that does not resolve is named."""
    if isinstance(node, DictConfig):
        items = {}
        for name in node.keys():
            key = f"{prefix}.{name}" if prefix else str(name)
            if prefix == "" and name == "hydra":
                continue
            try:
                value = node[name]
            except OmegaConfBaseException as error:
                raise OptionError(f"{key}: {str(error).splitlines()[0]}") from None
            items[name] = resolved(value, key)
        return items
    if isinstance(node, ListConfig):
        return [resolved(node[index], f"{prefix}[{index}]") for index in range(len(node))]
    return node


def check_options(cfg: DictConfig, command: str) -> None:
    """Refuse (OptionError, SpecError) a composed config of `command` (a key of COMMANDS) with a mandatory value
    unset, a value its schema does not allow, or a bad model/data spec."""
    missing = missing_keys(OmegaConf.to_container(cfg, resolve=False))
    if missing:
        raise OptionError(f"Missing mandatory value: {', '.join(missing)} (give {missing[0]}=... on the command line)")
    schema, device_key, validations = COMMANDS[command]
    values = resolved(cfg)
    data = values.pop("data", None)
    check_node(values, schema)
    if data is not None:
        check_node(data, data_schema(data), "data")
    values["data"] = data
    if device_key is not None:
        check_device(OmegaConf.select(cfg, device_key), device_key)
    for validate in validations:
        validate(values)
