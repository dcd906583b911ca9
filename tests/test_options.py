"""The option schema (captioning/options.py) and the registries' argument types: no false alarms on any shipped
config, a type for every key, and the rules themselves (ints are not floats, bools are not ints)."""
from __future__ import annotations

import copy
import inspect
import typing
from pathlib import Path

import pytest
from omegaconf import DictConfig, OmegaConf, open_dict

from captioning.data.sources import SOURCES
from captioning.models.captioner import PARTS
from captioning.option_tables import SCHEMAS
from captioning.options import OptionError, check_options, missing_keys
from captioning.registry import Registry, SpecError, simple_annotations
from tests.test_configs import compose_every_option

COMMANDS = {"train": "train", "evaluate": "evaluate", "caption": "caption", "extract_features": "extract",
            "benchmark": "benchmark", "benchmark_decoding": "benchmark_decoding", "compare": "compare"}
# Keys typed elsewhere than the schema table: registries check model parts, data sources and the task name (and
# the benchmark's encoders and extraction rows: options.check_benchmark); experiments' stage inputs are
# interpolated into train.init_from; the rest is Hydra's or a code target.
ELSEWHERE = ("model.", "data.source.", "hydra.", "encoder.")
NOT_IN_TABLE = {"task.name", "activity", "stage1", "data", "optim._target_", "optim._partial_", "scheduler.build",
                "scheduler.build._target_", "scheduler.build._partial_", "also_frozen", "extraction"}


def shipped(primary: str, tmp: Path) -> dict[str, DictConfig]:
    """Every composition of conf/<primary>.yaml (each option of each group), as its script sees it: no `hydra` node,
    the run folder set, and each mandatory `???` value given (an existing file, so checkpoints and init_from pass)."""
    placeholder = tmp / "given.pt"
    placeholder.write_bytes(b"")
    composed = {}
    for key, cfg in compose_every_option(primary).items():
        given = missing_keys(OmegaConf.to_container(cfg, resolve=False))
        with open_dict(cfg):
            del cfg["hydra"]
            cfg.merge_with({"run_dir": str(tmp / "run")} if primary == "train" else {})
            cfg.merge_with({"output_dir": str(tmp / "eval")} if primary == "evaluate" else {})
            for name in given:
                OmegaConf.update(cfg, name, str(placeholder))
        composed[key] = cfg
    return composed


@pytest.fixture(scope="module")
def every_config(tmp_path_factory) -> dict[tuple[str, str], DictConfig]:
    tmp = tmp_path_factory.mktemp("options")
    return {(primary, key): cfg for primary in COMMANDS for key, cfg in shipped(primary, tmp).items()}


def test_every_shipped_config_passes(every_config):
    """All tasks, data groups, encoders, optimisers, schedulers and experiments: no false alarm."""
    for (primary, key), cfg in every_config.items():
        check_options(cfg, COMMANDS[primary])
    choices = {key for primary, key in every_config}
    assert {"task=activity", "task=video_caption", "data=coco", "data=clips", "data=karpathy", "data=flickr",
            "experiment=lrcn_description", "experiment=show_and_tell_coco_finetune", "optim=sgd", "bench=cuda"} <= choices


def leaf_keys(node, prefix: str = "") -> list[str]:
    if isinstance(node, dict) and node:
        return [key for name, value in node.items() for key in leaf_keys(value, f"{prefix}.{name}" if prefix else name)]
    return [prefix]


def test_every_key_has_a_type(every_config):
    """A key added to conf/ without a schema entry (or a registry that checks it) fails here."""
    for (primary, key), cfg in every_config.items():
        schema = SCHEMAS[COMMANDS[primary]]
        for name in leaf_keys(OmegaConf.to_container(cfg, resolve=False)):
            typed = (name in schema or name in NOT_IN_TABLE or name.startswith(ELSEWHERE)
                     or any(entry.startswith(f"{name}.") for entry in schema))  # a null group of typed keys
            assert typed, f"{primary} [{key}]: {name} has no type in captioning/options.py"


def test_checks_across_keys(every_config):
    cfg = copy.deepcopy(every_config[("caption", "")])
    cfg.decode.beam_size, cfg.decode.n_best = 2, 2
    check_options(cfg, "caption")  # n_best == beam_size is fine
    cfg.decode.n_best = 3
    with pytest.raises(OptionError, match=r"decode.n_best=3: expected an integer in 1..2 \(decode.beam_size\)"):
        check_options(cfg, "caption")


def test_a_broken_interpolation_names_its_key(every_config):
    cfg = copy.deepcopy(every_config[("train", "")])
    cfg.train.epochs = "${nowhere}"
    with pytest.raises(OptionError, match="^train.epochs: "):
        check_options(cfg, "train")


# ---------------------------------------------------------------- registry argument types


def registry_with(constructor) -> Registry:
    registry = Registry("widget")
    registry.register("w")(constructor)
    return registry


class Widget:
    def __init__(self, size: int, rate: float = 0.5, on: bool = True, label: str | None = None,
                 root: str | Path = ".", extra: dict | None = None, anything=None):
        pass


@pytest.mark.parametrize("argument, value", [("size", 3), ("rate", 1), ("rate", 0.25), ("on", False),
                                             ("label", None), ("label", "x"), ("root", "dir"), ("extra", {"a": 1}),
                                             ("anything", [1, "x"])])
def test_registry_accepts_values_of_the_annotated_type(argument, value):
    spec = {"name": "w", "size": 1, argument: value}
    assert registry_with(Widget).check(spec, "model.widget")[1][argument] == value


@pytest.mark.parametrize("argument, value, expected", [
    ("size", "abc", "expected an int, found 'abc'"), ("size", 3.0, "expected an int, found 3.0"),
    ("size", True, "expected an int, found True"), ("rate", "0.5", "expected a number, found '0.5'"),
    ("rate", False, "expected a number, found False"), ("on", 1, "expected a bool, found 1"),
    ("label", 5, "expected a string or null, found 5"), ("root", None, "expected a string, found None"),
    ("size", None, "expected an int, found None")])
def test_registry_refuses_values_of_another_type(argument, value, expected):
    spec = {"name": "w", "size": 1, argument: value}
    with pytest.raises(SpecError, match=f"^model.widget.{argument}: {expected}$"):
        registry_with(Widget).check(spec, "model.widget")


def test_every_registered_component_has_its_types_checked():
    """Each constructor's annotations evaluate here (a failure would silently switch its type checks off)."""
    for registry in [*PARTS.values(), SOURCES]:
        for name in registry.names():
            constructor = registry.get(name)
            typing.get_type_hints(constructor.__init__ if inspect.isclass(constructor) else constructor)
    assert simple_annotations(PARTS["decoder"].get("lstm"))["hidden_size"] == (int,)
    assert simple_annotations(SOURCES.get("flickr"))["split_file"] == (str, Path, type(None))
