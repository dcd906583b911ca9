"""Every config in conf/ composes, and what can be built cheaply from it is built.

Each primary config (conf/*.yaml) is composed with its defaults, then with every option of every group
it selects, following groups that an option brings in (task=activity adds model/temporal...). Every
YAML file under conf/ must be reached this way, so a new config that nothing composes fails here.
Models and data sources are chosen by registered name (`name:`), never by `_target_`: every such spec
must name a registered component and only arguments it takes.
"""
from __future__ import annotations

import copy
import functools
import re

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationToMissingValueError, MissingMandatoryValue

from captioning.data.sources import SOURCES
from captioning.models.caption_model import PARTS, SUPPLIED, check_model_spec, decoder_sizes
from captioning.models.decoders import DECODERS
from captioning.models.encoders import ENCODERS
from captioning.models.memory import Features
from captioning.plugins import MissingPlugin, check_plugins, installed
from captioning.registry import plain
from captioning.tasks import TASKS, direction  # also registers hparams_search=optuna's ${direction:...}
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
    out and listed in SKIPPED. Composed once per session (seconds for every primary); each caller gets its own copies.
    """
    return {key: copy.deepcopy(cfg) for key, cfg in _every_option(primary).items()}


@functools.cache
def _every_option(primary: str) -> dict[str, DictConfig]:
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
    for (_primary, _), cfg in every_config.items():
        reached |= {f"{group}/{choice}" for group, choice in cfg.hydra.runtime.choices.items() if choice}
    experiment_bases = {f"experiment/{p.stem}" for p in (CONF / "experiment").glob("*.yaml")}
    all_files = {str(p.relative_to(CONF).with_suffix("")) for p in CONF.rglob("*.yaml")}
    included = {name for name in all_files if name.startswith("common/")}
    referenced = "\n".join(p.read_text() for p in CONF.rglob("*.yaml"))
    assert all(re.search(rf"^\s*- /{name}\b", referenced, re.MULTILINE) for name in included), included
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
    assert {"torch.optim.SGD", "torch.optim.Adam", "torch.optim.lr_scheduler.StepLR"} <= checked


def test_models_and_data_name_no_code():
    """conf/model/** and conf/data/** choose components by registered name: no `_target_` in the files, and none
    in the model, data or benchmark encoders of any composed config."""
    for path in sorted((CONF / "model").rglob("*.yaml")) + sorted((CONF / "data").rglob("*.yaml")):
        assert "_target_" not in path.read_text(), path
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        for primary, overrides in [("train", []), ("train", ["task=activity"]), ("train", ["task=video_caption"]),
                                   ("benchmark", []), ("benchmark", ["bench=cuda"]), ("extract_features", [])]:
            cfg = OmegaConf.to_container(compose(primary, overrides=overrides), resolve=False)
            found = targets({key: cfg.get(key) for key in ("model", "data", "encoder", "also_frozen", "extraction")})
            assert found == [], f"{primary} {overrides}: {found}"


def spec_of(node: DictConfig) -> dict:
    """A spec as plain data, resolved; where it interpolates a mandatory value left unset (`???`, as
    `data.captions_file` in the spec `${source:flickr}` makes), unresolved: the names and arguments are what is checked."""
    spec = {}
    for key in node:
        try:
            spec[key] = plain(node[key])
        except (MissingMandatoryValue, InterpolationToMissingValueError):
            spec[key] = OmegaConf.to_container(node, resolve=False)[key]
    return spec


def component_specs(cfg: DictConfig) -> list[tuple[str, object, dict, tuple[str, ...]]]:
    """(where, registry, spec, arguments the caller supplies) of every registered-component spec in a config:
    model parts, the data source, and the benchmark's encoders."""
    specs = []
    model = cfg.get("model") or {}
    for part in model:
        if model[part] is not None:
            specs.append((f"model.{part}", PARTS[part], spec_of(model[part]), SUPPLIED[part]))
    if cfg.get("data") is not None and cfg.data.get("source") is not None:
        specs.append(("data.source", SOURCES, spec_of(cfg.data.source), ()))
    if cfg.get("encoder") is not None:
        specs.append(("encoder", ENCODERS, spec_of(cfg.encoder), ()))
    for index, extra in enumerate(cfg.get("also_frozen") or []):
        specs.append((f"also_frozen[{index}]", ENCODERS, spec_of(extra), ()))
    for index, row in enumerate(cfg.get("extraction") or []):
        specs.append((f"extraction[{index}].encoder", ENCODERS, spec_of(row.encoder), ()))
    return specs


def test_every_model_and_data_spec_names_a_registered_component(every_config):
    """Each spec passes its registry's check (registered name, known arguments, plain values), and every file under
    conf/model/ and conf/data/ was checked this way in some composition."""
    checked_files, kinds = set(), set()
    for (primary, key), cfg in every_config.items():
        for where, registry, spec, supplied in component_specs(cfg):
            registry.check(spec, f"{primary} [{key}] {where}", supplied)
            kinds.add(registry.kind)
        checked_files |= {f"{group}/{choice}" for group, choice in cfg.hydra.runtime.choices.items()
                          if choice and group.split("/")[0] in ("model", "data")}
    files = {str(path.relative_to(CONF).with_suffix(""))
             for folder in ("model", "data") for path in (CONF / folder).rglob("*.yaml")}
    assert files - checked_files == set()
    assert kinds == {"encoder", "decoder", "temporal model", "classifier", "data source"}
    bench = compose_with("benchmark", ["bench=cuda"])
    assert [where for where, *_ in component_specs(bench)] == [
        "encoder", "extraction[0].encoder", "extraction[1].encoder", "extraction[2].encoder"]


def test_a_misspelt_spec_is_refused():
    """The check above can fail: an unknown name or argument is named in the error."""
    cfg = compose_with("train", [])
    encoder = plain(cfg.model.encoder)
    with pytest.raises(ValueError, match="widht"):
        ENCODERS.check({**encoder, "widht": 8}, "model.encoder")
    with pytest.raises(ValueError, match="unknown encoder 'tiny'"):
        ENCODERS.check({**encoder, "name": "tiny"}, "model.encoder")
    with pytest.raises(ValueError, match="unknown data source"):
        SOURCES.check({**plain(cfg.data.source), "name": "synthetics"}, "data.source")


def test_optimizers_and_schedulers_build(every_config):
    """Optimizer partials take parameter groups; schedulers take the optimizer and step."""
    built = set()
    for (primary, _key), cfg in every_config.items():
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


def test_every_task_model_spec_and_decoder_build(every_config):
    """Every training config names a registered task whose model parts it composes exactly, and its decoder builds
    and scores teacher-forced tokens."""
    tasks = set()
    for (primary, key), cfg in every_config.items():
        if primary == "train":
            task = TASKS.get(cfg.task.name, f"[{key}] task.name")
            check_model_spec(plain(cfg.model), task.model_parts, f"[{key}] model")
            tasks.add(task.name)
            if cfg.model.get("decoder") is not None:
                spec = plain(cfg.model.decoder)
                decoder = DECODERS.build(spec, "model.decoder", **decoder_sizes(spec, 7, 5, grid_dim=3))
                tokens = torch.ones(2, 3, dtype=torch.long)  # 2 next-word targets per row
                memory = Features(torch.zeros(2, 5), torch.zeros(2, 4, 3))  # grids of 4 cells for attention decoders
                assert decoder.target_logits(memory, tokens).shape == (4, 7), key
                total, count = decoder.loss(memory, tokens)
                assert count == 4 and torch.isfinite(total), key
    assert tasks == set(TASKS.names())


def learning_rates(cfg: DictConfig, epochs: int) -> tuple[torch.optim.Optimizer, list[float]]:
    """The configured optimizer and scheduler on one parameter -> the optimizer, its learning rate at each epoch."""
    optimizer = instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(1))])
    scheduler = instantiate(cfg.scheduler.build)(optimizer)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return optimizer, rates


def test_show_and_tell_recipe():
    """The im2txt hyper-parameters, and a learning rate that really halves every 8 epochs."""
    cfg = compose_with("train", ["experiment=show_and_tell_coco"])
    assert cfg.data.name == "karpathy" and cfg.data.restval_as_train and cfg.data.sampling == "pairs"
    assert (cfg.model.encoder.name, cfg.model.encoder.model) == ("torchvision", "inception_v3")
    assert not cfg.model.encoder.trainable
    decoder = cfg.model.decoder
    assert (decoder.embed_size, decoder.hidden_size, decoder.dropout, decoder.image_input) == (512, 512, 0.3, "first_step")
    assert (cfg.vocab.min_count, cfg.train.batch_size, cfg.train.grad_clip, cfg.train.max_steps) == (4, 32, 5.0, 1_000_000)
    optimizer, rates = learning_rates(cfg, 17)
    assert type(optimizer) is torch.optim.SGD and cfg.optim.momentum == 0.0
    assert rates[0] == rates[7] == 2.0 and rates[8] == rates[15] == 1.0 and rates[16] == 0.5
    assert cfg.scheduler.interval == "epoch"


def test_show_and_tell_second_stage():
    cfg = compose_with("train", ["experiment=show_and_tell_coco_finetune"])
    assert (cfg.model.encoder.name, cfg.model.encoder.model) == ("torchvision", "inception_v3")
    assert cfg.model.encoder.trainable
    assert cfg.optim.lr == cfg.train.encoder_lr == 0.0005 and cfg.scheduler.build is None
    assert OmegaConf.is_missing(cfg, "stage1")  # stage 1's checkpoint must be named ...
    named = compose_with("train", ["experiment=show_and_tell_coco_finetune", "stage1=runs/st1/checkpoints/last.pt"])
    assert named.train.init_from == "runs/st1/checkpoints/last.pt"  # ... and is what training starts from
    assert cfg.vocab.min_count == 4 and cfg.model.decoder.image_input == "first_step"  # the rest is stage 1's
    assert cfg.train.max_steps == 2_000_000


def test_karpathy_resnet101_recipe():
    cfg = compose_with("train", ["experiment=karpathy_resnet101"])
    assert cfg.data.name == "karpathy"
    assert (cfg.model.encoder.name, cfg.model.encoder.model) == ("torchvision", "resnet101")
    assert not cfg.model.encoder.trainable
    assert cfg.train.select_metric == "CIDEr" and direction(cfg.train.select_metric) == "maximize"
    optimizer, rates = learning_rates(cfg, 7)
    assert type(optimizer) is torch.optim.Adam
    assert rates[:3] == [5e-4] * 3 and rates[3] == pytest.approx(4e-4) and rates[6] == pytest.approx(3.2e-4)


@pytest.mark.skipif(not installed("hydra_plugins.hydra_optuna_sweeper"), reason="hydra-optuna-sweeper not installed")
def test_optuna_search_config():
    cfg = compose_with("train", ["hparams_search=optuna"])
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("OptunaSweeper") and str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    assert sweeper.direction == "maximize" and sweeper.sampler.seed == 0
    assert set(sweeper.params) == {"optim.lr", "model.decoder.hidden_size", "model.decoder.dropout"}
    # the direction comes from the selection metric: lower is better for loss and perplexity only
    for metric, expected in [("loss", "minimize"), ("perplexity", "minimize"), ("CIDEr", "maximize"),
                             ("accuracy", "maximize")]:
        chosen = compose_with("train", ["hparams_search=optuna", f"train.select_metric={metric}"])
        assert chosen.hydra.sweeper.direction == expected, metric


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


def test_coco_attention_and_scst_recipes():
    from captioning.models.caption_model import build_caption_model
    from captioning.registry import plain

    sat = compose_with("train", ["experiment=sat_coco"])
    assert (sat.model.decoder.name, sat.model.encoder.model, sat.model.encoder.input_size) == \
        ("soft_attention", "resnet101", 448)
    model = build_caption_model(plain(sat.model), vocab_size=12, pretrained=False).eval()
    with torch.no_grad():
        memory = model.encoder(torch.zeros(1, 3, 448, 448))
    assert tuple(memory.grid.shape) == (1, 196, 2048)  # the paper's 14 x 14 grid
    updown = compose_with("train", ["experiment=updown_coco"])
    assert (updown.model.decoder.name, updown.model.decoder.hidden_size, updown.optim.lr) == ("updown", 1000, 5e-4)
    scst = compose_with("train", ["experiment=scst_coco", "train.init_from=runs/fc/checkpoints/best.pt"])
    assert (scst.train.objective, scst.train.scst.baseline, scst.optim.lr) == ("scst", "mean", 5e-5)
    assert scst.model.decoder.image_input == "first_step" and scst.data.name == "karpathy"  # the FC recipe's model
