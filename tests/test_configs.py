"""Every config in conf/ composes, and what can be built cheaply from it is built.

Each primary config (conf/*.yaml) is composed with its defaults, then with every option of every group
it selects, following groups that an option brings in (task=activity adds model/temporal...). Every
YAML file under conf/ must be reached this way, so a new config that nothing composes fails here.
"""
from __future__ import annotations


import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf

from captioning.plugins import MissingPlugin, check_plugins, installed
from tests.conftest import CONF

PRIMARY = sorted(path.stem for path in CONF.glob("*.yaml"))
SKIPPED: set[str] = set()  # configs not composed because their plugin is missing
PLUGIN_LAUNCHERS = {"joblib": "hydra_plugins.hydra_joblib_launcher",
                    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
                    "submitit_local": "hydra_plugins.hydra_submitit_launcher"}


def compose_with(primary: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        return compose(primary, overrides=overrides, return_hydra_config=True)


def options(group: str) -> list[str]:
    """This project's options of a group (files in conf/<group>/)."""
    return sorted(path.stem for path in (CONF / group).glob("*.yaml"))


def needs_missing_plugin(override: str) -> bool:
    try:
        check_plugins([override], CONF)
    except MissingPlugin:
        return True
    return False


def compose_every_option(primary: str) -> dict[str, DictConfig]:
    """`group=option` overrides (space-joined) -> composed config, for every option reachable from `primary`.

    Every option of every group the primary selects, then every option of the groups that an option
    brings in (task=activity adds model/temporal). Options whose Hydra plugin is not installed are left
    out and listed in SKIPPED.
    """
    composed = {"": compose_with(primary, [])}
    top_groups = set(composed[""].hydra.runtime.choices)
    pending = [[]]
    while pending:
        base = pending.pop()
        for group, choice in composed[" ".join(base)].hydra.runtime.choices.items():
            if (group.startswith("hydra/") and group != "hydra/launcher") or (base and group in top_groups):
                continue
            for option in options(group):
                overrides = base + [f"{group}={option}"]
                key = " ".join(overrides)
                if option == choice or key in composed:
                    continue
                if needs_missing_plugin(f"{group}={option}"):
                    SKIPPED.add(f"{group}/{option}")
                    continue
                composed[key] = compose_with(primary, overrides)
                if not base:
                    pending.append(overrides)
    return composed


@pytest.fixture(scope="module")
def every_config() -> dict[tuple[str, str], DictConfig]:
    return {(primary, key): cfg for primary in PRIMARY for key, cfg in compose_every_option(primary).items()}


def targets(node, path="") -> list[tuple[str, str]]:
    """(config path, `_target_`) of every node that names one."""
    found = []
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            found.append((path, node["_target_"]))
        for key, value in node.items():
            found += targets(value, f"{path}.{key}" if path else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found += targets(value, f"{path}[{index}]")
    return found


def test_every_yaml_file_is_composed(every_config):
    """Each option file was selected by some composition; included-only files (conf/common/) are included."""
    reached = {f"{primary}" for primary in PRIMARY}
    for (primary, _), cfg in every_config.items():
        reached |= {f"{group}/{choice}" for group, choice in cfg.hydra.runtime.choices.items() if choice}
    experiment_bases = {f"experiment/{p.stem}" for p in (CONF / "experiment").glob("*.yaml")}
    all_files = {str(p.relative_to(CONF).with_suffix("")) for p in CONF.rglob("*.yaml")}
    included = {name for name in all_files if name.startswith("common/")}
    referenced = "\n".join(p.read_text() for p in CONF.rglob("*.yaml"))
    assert all(f"/{name}@" in referenced for name in included), included
    assert all_files - included - SKIPPED - reached == set()
    assert experiment_bases <= reached


def test_every_target_resolves(every_config):
    """Every `_target_` in every composed config (launchers and sweepers included) names an importable object."""
    checked = set()
    for (primary, key), cfg in every_config.items():
        for path, target in targets(OmegaConf.to_container(cfg, resolve=False)):
            if target not in checked:
                assert callable(get_object(target)), f"{primary} [{key}] {path}: {target}"
                checked.add(target)
    assert "torch.optim.SGD" in checked and "captioning.train.train" in checked


def test_optimizers_and_schedulers_build(every_config):
    """Optimizer partials take parameter groups; schedulers take the optimizer and step."""
    built = set()
    for (primary, key), cfg in every_config.items():
        if primary != "train":
            continue
        weight = torch.nn.Parameter(torch.zeros(2))
        optimizer = instantiate(cfg.optim)([{"params": [weight]}])
        assert optimizer.param_groups[0]["lr"] == cfg.optim.lr
        if cfg.scheduler.build is not None:
            scheduler = instantiate(cfg.scheduler.build)(optimizer)
            optimizer.step()
            scheduler.step()
        built.add((type(optimizer).__name__, cfg.hydra.runtime.choices["scheduler"]))
    assert {("Adam", "none"), ("SGD", "step"), ("Adam", "cosine")} <= built


def test_every_task_runner_and_decoder_build(every_config):
    for (primary, key), cfg in every_config.items():
        if primary == "train":
            assert callable(instantiate(cfg.task.runner)), key
            if cfg.model.get("decoder") is not None:
                decoder = instantiate(cfg.model.decoder, vocab_size=7, feature_dim=5)
                assert decoder(torch.zeros(2, 5), torch.ones(2, 3, dtype=torch.long)).shape == (2, 3, 7)


def test_show_and_tell_recipe():
    """The im2txt hyper-parameters, and a learning rate that really halves every 8 epochs."""
    cfg = compose_with("train", ["experiment=show_and_tell_coco"])
    assert cfg.data.name == "karpathy" and cfg.data.restval_as_train and cfg.data.sampling == "pairs"
    assert cfg.model.encoder.name == "inception_v3" and not cfg.model.encoder.trainable
    decoder = cfg.model.decoder
    assert (decoder.embed_size, decoder.hidden_size, decoder.dropout, decoder.image_input) == (512, 512, 0.3, "first_step")
    assert (cfg.vocab.min_count, cfg.train.batch_size, cfg.train.grad_clip, cfg.train.max_steps) == (4, 32, 5.0, 1_000_000)
    optimizer = instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(1))])
    scheduler = instantiate(cfg.scheduler.build)(optimizer)
    rates = []
    for _ in range(17):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert type(optimizer) is torch.optim.SGD and cfg.optim.momentum == 0.0
    assert rates[0] == rates[7] == 2.0 and rates[8] == rates[15] == 1.0 and rates[16] == 0.5
    assert cfg.scheduler.interval == "epoch"


def test_show_and_tell_second_stage():
    cfg = compose_with("train", ["experiment=show_and_tell_coco_finetune"])
    assert cfg.model.encoder.name == "inception_v3" and cfg.model.encoder.trainable
    assert cfg.optim.lr == cfg.train.encoder_lr == 0.0005 and cfg.scheduler.build is None
    assert OmegaConf.is_missing(cfg, "stage1")  # stage 1's checkpoint must be named ...
    named = compose_with("train", ["experiment=show_and_tell_coco_finetune", "stage1=runs/st1/checkpoints/last.pt"])
    assert named.train.init_from == "runs/st1/checkpoints/last.pt"  # ... and is what training starts from
    assert cfg.vocab.min_count == 4 and cfg.model.decoder.image_input == "first_step"  # the rest is stage 1's
    assert cfg.train.max_steps == 2_000_000


def test_karpathy_resnet101_recipe():
    cfg = compose_with("train", ["experiment=karpathy_resnet101"])
    assert cfg.data.name == "karpathy" and cfg.model.encoder.name == "resnet101" and not cfg.model.encoder.trainable
    assert (cfg.train.select_metric, cfg.train.select_mode) == ("CIDEr", "max")
    optimizer = instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(1))])
    scheduler = instantiate(cfg.scheduler.build)(optimizer)
    rates = []
    for _ in range(7):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert type(optimizer) is torch.optim.Adam
    assert rates[:3] == [5e-4] * 3 and rates[3] == pytest.approx(4e-4) and rates[6] == pytest.approx(3.2e-4)


@pytest.mark.skipif(not installed("hydra_plugins.hydra_optuna_sweeper"), reason="hydra-optuna-sweeper not installed")
def test_optuna_search_config():
    cfg = compose_with("train", ["hparams_search=optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert sweeper.direction == "maximize" and sweeper.sampler.seed == 0
    assert set(sweeper.params) == {"optim.lr", "model.decoder.hidden_size", "model.decoder.dropout"}
    # selecting on validation loss turns the search around
    minimise = compose_with("train", ["hparams_search=optuna", "train.select_metric=loss", "train.select_mode=min"])
    assert minimise.hydra.sweeper.direction == "minimize"


@pytest.mark.parametrize("launcher", sorted(PLUGIN_LAUNCHERS))
def test_plugin_launchers_compose(launcher):
    if not installed(PLUGIN_LAUNCHERS[launcher]):
        pytest.skip(f"the plugin for hydra/launcher={launcher} is not installed")
    cfg = compose_with("train", [f"hydra/launcher={launcher}"])
    assert callable(get_object(cfg.hydra.launcher._target_))


@pytest.mark.skipif(not installed("hydra_plugins.hydra_submitit_launcher"), reason="hydra-submitit-launcher not installed")
def test_slurm_launcher_config():
    """hydra/launcher=slurm is submitit's SlurmLauncher with our documented sbatch settings (composed, never submitted)."""
    cfg = compose_with("train", ["hydra/launcher=slurm", "hydra.launcher.partition=gpu", "hydra.launcher.timeout_min=60",
                                 "hydra.launcher.gpus_per_node=4"])
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.partition, launcher.timeout_min, launcher.gpus_per_node) == ("gpu", 60, 4)
    assert launcher.tasks_per_node == 1 and launcher.cpus_per_task == 8
    assert OmegaConf.to_container(cfg.hydra, resolve=False)["launcher"]["submitit_folder"].startswith("${hydra.sweep.dir}")
