"""`fit(cfg, run) -> metrics`: the training loop shared by the clip tasks (activity, video description).

What differs between tasks (model, loss, validation, what a checkpoint needs to rebuild the model)
comes in a `Run`; the rest follows `captioning.train.train`: exact resume, atomic best/last
checkpoints, TensorBoard, steps.jsonl, validation.jsonl, metrics.json and curves.png.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from torch.utils.tensorboard import SummaryWriter

from captioning.checkpoint import save_checkpoint
from captioning.data.dataset import EpochSampler
from captioning.engine import LossFn, train_one_epoch
from captioning.plots import plot_training
from captioning.train import restore, rng_state

log = logging.getLogger(__name__)


@dataclass
class Run:
    """The task-specific parts of a clip training run."""
    model: torch.nn.Module                           # has `.encoder` (TimeDistributed, with `.preprocess`)
    sampler: EpochSampler                            # training order, resumable mid-epoch
    train_loader: DataLoader                         # batches in `sampler` order
    loss_fn: LossFn                                  # batch on the device -> (summed loss, terms)
    validate: Callable[[], tuple[dict, str]]         # -> validation metrics, a few examples as text for TensorBoard
    metric_names: tuple[str, ...]                    # the scalar metrics `validate` returns (select_metric must be one)
    rebuild: dict                                    # checkpoint keys that rebuild the model (model_config, classes, ...)
    summary: Callable[[dict], str]                   # one log line for a validation result
    pretrained: list[torch.nn.Module]                # trained at `train.encoder_lr`: a trainable encoder, transferred parts


def optimizer_groups(model: torch.nn.Module, pretrained: list[torch.nn.Module], pretrained_lr: float) -> list[dict]:
    """The `pretrained` modules at `pretrained_lr`; every other parameter at the optimizer's own lr."""
    slow = [p for module in pretrained for p in module.parameters() if p.requires_grad]
    slow_ids = {id(p) for p in slow}
    groups = [{"params": [p for p in model.parameters() if id(p) not in slow_ids and p.requires_grad]}]
    return groups + ([{"params": slow, "lr": pretrained_lr}] if slow else [])


def fit(cfg: DictConfig, run: Run, device: torch.device, amp_dtype: torch.dtype | None, resume: dict | None) -> dict:
    """Train `run.model` for `cfg.train.epochs` (or `max_steps`), validating after each epoch."""
    run_dir = Path(cfg.run_dir)
    model = run.model
    select, mode = cfg.train.select_metric, cfg.train.select_mode
    if select not in run.metric_names:
        raise ValueError(f"train.select_metric={select!r} is not a validation metric of this task; "
                         f"choose from {run.metric_names}")
    encoder_lr = cfg.train.encoder_lr if cfg.train.encoder_lr is not None else cfg.optim.lr
    optimizer = instantiate(cfg.optim)(optimizer_groups(model, run.pretrained, encoder_lr))
    scheduler = instantiate(cfg.scheduler.build)(optimizer) if cfg.scheduler.build else None
    per_step_schedule = scheduler is not None and cfg.scheduler.interval == "step"
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None

    epoch, batch_in_epoch, step = 0, 0, 0
    best = {"value": None, "epoch": None, "step": None}
    if resume is not None:
        epoch, batch_in_epoch, step, saved_best = restore(resume, cfg.train.resume, model, optimizer, scheduler, scaler)
        best = saved_best or best

    writer = SummaryWriter(str(run_dir / "tensorboard"))
    step_log = open(run_dir / "steps.jsonl", "a")
    steps_at_epoch_start = step - batch_in_epoch

    def payload(epoch: int, batch_in_epoch: int, step: int, metrics: dict | None) -> dict:
        return {"model": model.state_dict(), **run.rebuild, "preprocess": model.encoder.preprocess,
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict() if scheduler else None,
                "scaler": scaler.state_dict() if scaler else None, "epoch": epoch, "batch_in_epoch": batch_in_epoch,
                "step": step, "rng": rng_state(), "metrics": metrics, "best": best,
                "config": OmegaConf.to_container(cfg, resolve=True)}

    def on_step(step: int, loss: float) -> None:
        lr = optimizer.param_groups[0]["lr"]
        step_log.write(json.dumps({"step": step, "epoch": epoch, "loss": loss, "lr": lr}) + "\n")
        if step % cfg.train.log_every == 0:
            writer.add_scalar("train/loss", loss, step)
            writer.add_scalar("train/lr", lr, step)
        if cfg.train.checkpoint_every and step % cfg.train.checkpoint_every == 0:
            save_checkpoint(payload(epoch, step - steps_at_epoch_start, step, None), run_dir / "checkpoints" / "last.pt")

    metrics, max_steps = None, cfg.train.max_steps
    while epoch < cfg.train.epochs and (max_steps is None or step < max_steps):
        run.sampler.set_epoch(epoch, skip=batch_in_epoch * cfg.train.batch_size)
        steps_at_epoch_start = step - batch_in_epoch
        step, stopped = train_one_epoch(model, run.train_loader, optimizer, device, run.loss_fn, step=step,
                                        max_steps=max_steps, amp_dtype=amp_dtype, scaler=scaler,
                                        grad_clip=cfg.train.grad_clip, scheduler=scheduler if per_step_schedule else None,
                                        on_step=on_step, desc=f"epoch {epoch + 1}/{cfg.train.epochs}")
        step_log.flush()
        if stopped:
            batch_in_epoch = step - steps_at_epoch_start  # stopped mid-epoch: a resume continues this epoch
        else:
            epoch, batch_in_epoch = epoch + 1, 0
            if scheduler is not None and not per_step_schedule:
                scheduler.step()
        metrics, examples = run.validate()
        metrics.update(epoch=epoch, step=step)
        log.info("epoch %d step %d | %s", epoch, step, run.summary(metrics))
        for name in run.metric_names:
            writer.add_scalar(f"val/{name}", metrics[name], step)
        writer.add_text("val/examples", examples, step)
        with open(run_dir / "validation.jsonl", "a") as handle:  # scalars only: a confusion matrix can be large
            handle.write(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}) + "\n")
        value = metrics[select]
        if best["value"] is None or (value > best["value"] if mode == "max" else value < best["value"]):
            best = {"value": value, "epoch": epoch, "step": step}
            save_checkpoint(payload(epoch, batch_in_epoch, step, metrics), run_dir / "checkpoints" / "best.pt")
        save_checkpoint(payload(epoch, batch_in_epoch, step, metrics), run_dir / "checkpoints" / "last.pt")

    writer.close()
    step_log.close()
    if metrics is None:
        raise RuntimeError(f"nothing to train: epoch {epoch} >= train.epochs={cfg.train.epochs} "
                           f"or step {step} >= train.max_steps={max_steps}")
    result = {**metrics, "select_metric": select, "select": best["value"], "best": best}
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2))
    plot_training(run_dir)
    return result
