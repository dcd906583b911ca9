"""The option schemas (captioning/config/) and the registries' argument types: no false alarms on any shipped
config, every schema in the ConfigStore, the check's refusals (an undeclared key, a rule across keys, a broken
interpolation), and the rules themselves (ints are not floats, bools are not ints)."""
from __future__ import annotations

import copy
import dataclasses
import inspect
import typing
from pathlib import Path

import pytest
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict

from captioning.config import COMMANDS, OptionError, check_options, missing_keys
from captioning.config.data import DATA_SCHEMAS
from captioning.config.fields import schema_of
from captioning.data.sources import SOURCES
from captioning.models.caption_model import PARTS
from captioning.registry import Registry, SpecError, simple_annotations
from tests.test_configs import compose_every_option

COMMANDS_OF = {"train": "train", "evaluate": "evaluate", "caption": "caption", "extract_features": "extract",
               "benchmark": "benchmark", "benchmark_decoding": "benchmark_decoding", "compare": "compare", "folds": "folds",
               "export": "export", "demo": "demo", "pack_region_features": "pack_regions", "scale": "scale"}


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
            cfg.merge_with({"checkpoint": str(placeholder)} if primary == "demo" else {})  # its default: a run's
            for name in given:
                OmegaConf.update(cfg, name, str(placeholder))
        composed[key] = cfg
    return composed


@pytest.fixture(scope="module")
def every_config(tmp_path_factory) -> dict[tuple[str, str], DictConfig]:
    tmp = tmp_path_factory.mktemp("options")
    return {(primary, key): cfg for primary in COMMANDS_OF for key, cfg in shipped(primary, tmp).items()}


def test_every_shipped_config_passes(every_config):
    """All tasks, data groups, encoders, optimisers, schedulers and experiments: no false alarm, and so no key
    that its schema does not declare (the check refuses those)."""
    for (primary, _), cfg in every_config.items():
        check_options(cfg, COMMANDS_OF[primary])
    choices = {key for primary, key in every_config}
    assert {"task=activity", "task=video_caption", "data=coco", "data=clips", "data=karpathy", "data=flickr",
            "experiment=lrcn_description", "experiment=show_and_tell_coco_finetune", "optim=sgd", "bench=cuda"} <= choices


def declared(schema: type, prefix: str = "") -> set[str]:
    """The dotted keys a schema declares (nested schemas followed)."""
    keys = set()
    for field in dataclasses.fields(schema):
        key = f"{prefix}.{field.name}" if prefix else field.name
        nested = schema_of(typing.get_type_hints(schema)[field.name])
        keys |= declared(nested, key) if nested is not None and not field.metadata.get("spec") else {key}
    return keys


def leaf_keys(node, prefix: str = "") -> set[str]:
    if isinstance(node, dict) and node:
        return {key for name, value in node.items() for key in leaf_keys(value, f"{prefix}.{name}" if prefix else name)}
    return {prefix}


def covered(key: str, given: set[str]) -> bool:
    """`key` has a value in a composition: itself, keys below it, or a null group above it (`data.test: null`)."""
    return any(g == key or g.startswith(f"{key}.") or key.startswith(f"{g}.") for g in given)


def test_every_declared_option_has_a_yaml_default(every_config):
    """A schema field that no shipped YAML file gives a value is a declaration nothing uses."""
    given = {command: set() for command in COMMANDS}
    for (primary, _), cfg in every_config.items():
        given[COMMANDS_OF[primary]] |= {key for key in leaf_keys(OmegaConf.to_container(cfg, resolve=False))}
    for command, (schema, _, _) in COMMANDS.items():
        for key in declared(schema):
            assert key.startswith("data") or covered(key, given[command]), \
                f"{command}: {key} is declared in captioning/config/ but no YAML file gives it"
    data_keys = set().union(*(leaf_keys(OmegaConf.to_container(cfg.data, resolve=False), "data")
                              for (primary, _), cfg in every_config.items() if primary == "train"))
    for name, schema in DATA_SCHEMAS.items():
        assert all(covered(key, data_keys) for key in declared(schema, "data")), name


def test_every_schema_is_in_the_config_store():
    repository = ConfigStore.instance().repo["schema"]
    assert {f"{command}.yaml" for command in COMMANDS} <= set(repository)
    assert {f"{name}.yaml" for name in DATA_SCHEMAS} == set(repository["data"])
    assert {"decode", "optim", "scheduler", "train", "task", "vocab", "bench"} <= set(repository)


def test_a_key_its_schema_does_not_declare_is_refused(every_config):
    cfg = copy.deepcopy(every_config[("train", "")])
    with open_dict(cfg):
        cfg.train.select_mode = "maximize"  # what a YAML file could still say after the option was removed
    with pytest.raises(OptionError, match=r"^train.select_mode: not an option here; expected one of epochs, "):
        check_options(cfg, "train")


def test_a_data_key_is_written_once_and_read_as_the_source_spec(every_config):
    """data.captions_file is where users give it; data.source, the spec loaders and checkpoints read, follows it."""
    cfg = copy.deepcopy(every_config[("train", "data=flickr")])
    cfg.data.captions_file = "elsewhere.txt"
    assert cfg.data.source == {"name": "flickr", "captions_file": "elsewhere.txt", "image_dir": cfg.data.image_dir,
                               "split_file": None, "fold": None}
    for path in (Path(__file__).resolve().parents[1] / "conf" / "data").glob("*.yaml"):
        assert "${data." not in path.read_text(), path  # no key copied from another


def test_checks_across_keys(every_config):
    cfg = copy.deepcopy(every_config[("caption", "")])
    cfg.decode.beam_size, cfg.decode.n_best = 2, 2
    check_options(cfg, "caption")  # n_best == beam_size is fine
    cfg.decode.n_best = 3
    with pytest.raises(OptionError, match=r"decode.n_best=3: expected an integer in 1..2 \(decode.beam_size\)"):
        check_options(cfg, "caption")
    cfg.decode.n_best, cfg.decode.max_words, cfg.decode.min_words = 1, 3, 4
    with pytest.raises(OptionError, match=r"^decode.min_words=4: expected an integer in 0..3 \(decode.max_words\)$"):
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
