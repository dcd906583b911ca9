"""The task registry and the entry points every script and test calls: `train`, `evaluate`, `caption`, `extract`.

`cfg.task.name` (training) or a checkpoint's `task` (evaluation, captioning) is looked up in `TASKS`;
nothing is chosen by if/elif on task names, and a checkpoint cannot name code to run.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from captioning import distributed
from captioning.checkpoint import CheckpointError, check_finite, check_resumable, load_checkpoint
from captioning.config import OptionError, check_options, show
from captioning.execution import rank_seed, resolve_amp, seed_everything
from captioning.models.caption_model import check_model_spec
from captioning.provenance import write_provenance
from captioning.registry import plain
from captioning.tasks import activity, captioning  # noqa: F401  (register the tasks)
from captioning.tasks.base import TASKS, Task, read_checkpoint, task_of
from captioning.training.loop import fit
from captioning.training.run_log import RunLog, claim_run_dir
from captioning.training.scheduled_sampling import schedule_of

log = logging.getLogger(__name__)

__all__ = ["TASKS", "Task", "caption", "evaluate", "extract", "read_checkpoint", "train"]


def direction(metric: str) -> str:
    """Optuna's `direction` for a selection metric: the way the tasks that define it call better."""
    modes = {TASKS.get(name).metrics.get(metric) for name in TASKS.names()} - {None}
    return "minimize" if modes == {"min"} else "maximize"


OmegaConf.register_new_resolver("direction", direction, replace=True)  # conf/hparams_search/optuna.yaml


def check_task(cfg: DictConfig) -> Task:
    """A registered task, whose validation metrics include train.select_metric, and a model spec of its parts."""
    task = task_of(cfg.task.name, "task.name")
    if cfg.train.select_metric not in task.metrics:
        raise OptionError(f"train.select_metric={show(cfg.train.select_metric)}: not a validation metric of task "
                          f"{task.name!r}; expected one of {' | '.join(task.metrics)}")
    check_model_spec(plain(cfg.model), task.model_parts)
    sampling_prob = schedule_of(cfg.train)["max_prob"]
    if sampling_prob > 0 and task.label_part != "decoder":
        raise OptionError(f"train.scheduled_sampling.max_prob={sampling_prob}: task {task.name!r} writes no "
                          "captions; expected 0")
    smoothing = cfg.train.get("label_smoothing", 0.0)
    if smoothing > 0 and task.label_part != "decoder":
        raise OptionError(f"train.label_smoothing={smoothing}: smooths caption decoders' word targets; task "
                          f"{task.name!r} writes no captions; expected 0")
    if cfg.train.get("objective", "xe") == "scst":
        if "scst" not in task.objectives:
            raise OptionError(f"train.objective=scst: task {task.name!r} trains with {' | '.join(task.objectives)} only")
        if sampling_prob > 0:
            raise OptionError(f"train.scheduled_sampling.max_prob={sampling_prob}: scheduled sampling is for "
                              "cross-entropy training; expected 0 with train.objective=scst")
    return task


def train(cfg: DictConfig) -> dict:
    """Train the configured task from a composed config; returns the final validation metrics plus `select`.

    Under torchrun every process runs this; they share each global batch (DistributedDataParallel)
    and only rank 0 writes into the run folder.
    """
    check_options(cfg, "train")  # every option typed and in range before any file is read or written
    task = check_task(cfg)
    device = distributed.setup(cfg.train.device)
    seed_everything(rank_seed(cfg.seed, distributed.rank()))
    amp_dtype = resolve_amp(cfg.train.amp, device)
    resume = read_checkpoint(cfg.train.resume, expect_task=task.name)[0] if cfg.train.resume else None
    init = read_checkpoint(cfg.train.init_from)[0] if cfg.train.get("init_from") else None
    if resume is not None:
        check_resumable(resume, cfg.train.resume)
    if init is not None:
        check_finite(init["model"], cfg.train.init_from)
    # One training process per run folder; another run's files are replaced only on request (train.overwrite)
    with claim_run_dir(cfg.run_dir, resume_step=resume["step"] if resume is not None else None,
                       overwrite=cfg.train.get("overwrite", False), resume_from=cfg.train.resume or None):
        run_log = RunLog(cfg.run_dir, cfg.train.log_every)
        run_log.text("config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
        if run_log.active:
            write_provenance(cfg.run_dir, cfg.seed)  # git commit (+ diff), package versions, seed, command, host, time
        run = task.setup(cfg, device, amp_dtype, resume, init, run_log)
        result = fit(cfg, run, device, amp_dtype, resume, run_log)
        if distributed.is_main():
            task.finish(cfg, run, result, device)
    return result


def evaluate(cfg: DictConfig) -> dict:
    """conf/evaluate.yaml, checkpoint mode: the checkpoint's own task scores it on a split.
    The report's `summary` is the printable table."""
    check_options(cfg, "evaluate")
    return task_of_checkpoints(cfg.checkpoint).evaluate(cfg)


def caption(cfg: DictConfig) -> list[dict]:
    """conf/caption.yaml: `images=` names images for an image captioner, clips for a video description checkpoint."""
    check_options(cfg, "caption")
    return task_of_checkpoints(cfg.checkpoint).caption(cfg)


def task_of_checkpoints(checkpoint: Any) -> Task:
    """The task of `checkpoint=`: one file, or a list (an ensemble) of checkpoints of one task that takes ensembles."""
    paths = [checkpoint] if isinstance(checkpoint, str) else list(checkpoint)
    _, task = read_checkpoint(paths[0])
    for path in paths[1:]:
        if checkpoint_task(path) != task.name:
            raise CheckpointError(f"{path}: a {checkpoint_task(path)!r} checkpoint; the ensemble's first member "
                                  f"({paths[0]}) is a {task.name!r} one")
    if len(paths) > 1 and not task.ensembles:
        raise CheckpointError(f"{paths[0]}: {task.name!r} checkpoints do not form ensembles; give one checkpoint")
    return task


def extract(cfg: DictConfig) -> Path:
    """`scripts/extract_features.py`: the configured splits through the configured (frozen) encoder into a store."""
    check_options(cfg, "extract")
    from captioning.data.features import extract_features
    from captioning.data.loading import load_splits
    from captioning.execution import resolve_device
    from captioning.models.caption_model import build_encoder
    from captioning.registry import plain

    device = resolve_device(cfg.device)
    splits = load_splits(cfg.data, verify=tuple(cfg.splits))
    records = [record for split in cfg.splits for record in splits.get(split, [])]
    encoder = build_encoder({**plain(cfg.model.encoder), "trainable": False}, pretrained=True)
    return extract_features(encoder, records, cfg.output, device=device, batch_size=cfg.batch_size,
                            num_workers=cfg.data.num_workers, dtype=cfg.dtype, store_grid=cfg.store_grid,
                            amp_dtype=resolve_amp(cfg.amp, device),
                            decode_on_device=device.type == "cuda" if cfg.decode_on_device == "auto" else cfg.decode_on_device)


def checkpoint_task(path: str | Path) -> str:
    """The registered task a checkpoint was trained for (a cheap peek: tensors stay on disk)."""
    return load_checkpoint(path, mmap=True)["task"]
