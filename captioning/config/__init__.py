"""Options, declared once: a dataclass schema per config group and entry point (types, closed sets as Enums,
ranges), registered in Hydra's ConfigStore under `schema/`; the YAML files under conf/ give the defaults.

`check_options(cfg, command)` runs first in every entry point (captioning.tasks, scripts/*.py) and stops a bad value
with one line naming the key, the value and what is allowed: `train.grad_clip=-1: expected a number > 0 or null`.
This is the bottom layer: registries above are consulted lazily, inside the validations.
"""
from __future__ import annotations

from hydra.core.config_store import ConfigStore

from captioning.config import commands, data, train
from captioning.config.check import COMMANDS, check_options, missing_keys, resolved
from captioning.config.choices import SCST_BASELINES, ScstBaseline
from captioning.config.fields import OptionError, show
from captioning.config.train import MAX_CAPTION_WORDS

__all__ = ["COMMANDS", "MAX_CAPTION_WORDS", "SCST_BASELINES", "OptionError", "ScstBaseline", "check_options", "missing_keys", "resolved",
           "show"]


def register_schemas() -> None:
    """Every schema in the ConfigStore: `schema/<entry point>` and `schema/<group>/<option>`."""
    store = ConfigStore.instance()
    for command, (schema, _, _) in COMMANDS.items():
        store.store(group="schema", name=command, node=schema)
    for name, schema in data.DATA_SCHEMAS.items():
        store.store(group="schema/data", name=name, node=schema)
    for group, schema in (("decode", train.Decode), ("optim", train.Optim), ("scheduler", train.Scheduler),
                          ("train", train.Train), ("task", train.Task), ("vocab", train.Vocab)):
        store.store(group=f"schema/{group}", name="base", node=schema)
    store.store(group="schema/bench", name="base", node=commands.BenchmarkConfig)


register_schemas()
