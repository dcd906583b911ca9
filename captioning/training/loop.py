"""The one training loop: `train_one_epoch` and `fit`, for every task.

A task hands `fit` a `TaskRun`: its model, its loss, its batches, its validation and what its
checkpoints must carry. Everything else is here once: optimizer and scheduler, mixed precision,
DistributedDataParallel, exact resume, best/last checkpoints, logs and metrics.json.
"""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.nn.parallel import DistributedDataParallel as DDP
from tqdm import tqdm

from captioning import distributed
from captioning.checkpoint import CheckpointError, load_state
from captioning.data.sampler import EpochSampler
from captioning.execution import autocast, batch_size, rng_state, set_rng_state, split_batch, to_device
from captioning.training.run_log import RunLog

log = logging.getLogger(__name__)

LossFn = Callable[[dict], tuple[torch.Tensor, int]]  # a batch on the device -> (summed loss, number of terms)


@dataclass
class TaskRun:
    """What a task gives the loop."""
    model: torch.nn.Module                                  # forward(batch input, batch target, cached) -> (summed loss, terms)
    loss: Callable[[torch.nn.Module, dict], tuple[torch.Tensor, int]]  # (model or its DDP wrapper, batch) -> loss
    sampler: EpochSampler                                   # training order, resumable mid-epoch, DDP-sharded
    train_loader: Iterable[dict]                            # batches in `sampler` order
    validate: Callable[[], tuple[dict, list[str]]]          # -> metrics, a few examples as text
    metrics: dict[str, str]                                 # scalar validation metrics -> "max" | "min" (better)
    extras: dict                                            # checkpoint keys that rebuild the model (task, model_spec, ...)
    summary: Callable[[dict], str]                          # one log line for a validation result
    pretrained: list[torch.nn.Module]                       # trained at `train.encoder_lr`


def train_one_epoch(model: torch.nn.Module, loader: Iterable[dict], optimizer: torch.optim.Optimizer,
                    device: torch.device, loss_fn: LossFn, *, step: int, max_steps: int | None,
                    amp_dtype: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
                    grad_clip: float | None = None, scheduler=None, on_step: Callable[[int, float], None] | None = None,
                    desc: str = "train", micro_batch: int | None = None) -> tuple[int, bool]:
    """Train until the loader is exhausted or `max_steps` is reached; `loss_fn` makes one batch's summed loss.

    micro_batch: run the forward and backward passes on pieces of at most this many examples and take one optimiser
    step per batch (the same gradient, up to rounding, for the memory of a piece; null: the whole batch at once).
    Returns (step, stopped_early); stopped_early is True when batches of this epoch were left over.
    A per-step `scheduler` steps only when the optimizer did (fp16 skips steps whose gradients overflow).
    """
    model.train()
    progress = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
    for batch in progress:
        if max_steps is not None and step >= max_steps:
            return step, True
        batch = to_device(batch, device)
        optimizer.zero_grad(set_to_none=True)
        if micro_batch is not None and batch_size(batch) > micro_batch:
            all_total, all_count = backward_in_pieces(model, optimizer, batch, loss_fn, micro_batch, device=device,
                                                      amp_dtype=amp_dtype, scaler=scaler)
            finite_or_raise(all_total, step)
        else:
            with autocast(device, amp_dtype):
                total, count = loss_fn(batch)
            # Mean over the GLOBAL batch's terms: DDP averages gradients over ranks, so scale by the world size.
            # In one process this is the plain mean; across ranks it equals the one-process loss exactly.
            all_total, all_count = distributed.sum_all(total.item(), count, device=device)
            loss = total * distributed.world_size() / all_count
            finite_or_raise(all_total, step)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        reported = all_total / all_count
        if scaler is not None:
            scaler.unscale_(optimizer)
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], grad_clip)
        stepped = True
        if scaler is not None:
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            stepped = scaler.get_scale() >= scale  # the scale only drops when the step was skipped
        else:
            optimizer.step()
        if scheduler is not None and stepped:
            scheduler.step()
        step += 1
        progress.set_postfix(loss=f"{reported:.3f}", step=step)
        if on_step is not None:
            on_step(step, reported)
    return step, False


def finite_or_raise(total: float, step: int) -> None:
    if not math.isfinite(total):
        raise FloatingPointError(f"loss became {total} at step {step}; lower optim.lr or set train.grad_clip")


def backward_in_pieces(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict, loss_fn: LossFn,
                       size: int, *, device: torch.device, amp_dtype: torch.dtype | None,
                       scaler: torch.amp.GradScaler | None) -> tuple[float, float]:
    """Accumulate the gradient of the batch's mean loss over pieces of at most `size` examples -> (summed loss,
    terms) over all ranks. Each piece's summed loss is backpropagated as it comes (its graph is freed before the
    next piece runs); the number of terms is known only at the end (SCST counts sampled words), so the gradients
    are divided by it then. Under DDP only the last piece synchronises."""
    pieces = split_batch(batch, size)
    local_total, local_count = 0.0, 0
    for number, piece in enumerate(pieces):
        last = number == len(pieces) - 1
        with model.no_sync() if isinstance(model, DDP) and not last else contextlib.nullcontext():
            with autocast(device, amp_dtype):
                total, count = loss_fn(piece)
            scaled = total * distributed.world_size()
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        local_total, local_count = local_total + total.item(), local_count + count
    all_total, all_count = distributed.sum_all(local_total, local_count, device=device)
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            if parameter.grad is not None:
                parameter.grad.div_(all_count)
    return all_total, all_count


def optimizer_groups(model: torch.nn.Module, pretrained: list[torch.nn.Module], pretrained_lr: float) -> list[dict]:
    """The `pretrained` modules at `pretrained_lr`; every other trainable parameter at the optimizer's own lr."""
    slow = [p for module in pretrained for p in module.parameters() if p.requires_grad]
    slow_ids = {id(p) for p in slow}
    groups = [{"params": [p for p in model.parameters() if id(p) not in slow_ids and p.requires_grad]}]
    return groups + ([{"params": slow, "lr": pretrained_lr}] if slow else [])


def restore(resume: dict, path: str, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler,
            scaler: torch.amp.GradScaler | None) -> tuple[int, int, int, dict | None]:
    """Put a run back where `resume` (read from `path`) left it -> epoch, batch_in_epoch, step, best.

    Each rank gets back its own RNG state; a checkpoint from another number of ranks is refused.
    `resume` has passed `checkpoint.check_resumable` (captioning.tasks.train does that before any work).
    """
    states = resume["rng"]
    if not isinstance(states, list) or len(states) != distributed.world_size():
        count = len(states) if isinstance(states, list) else 1
        raise CheckpointError(f"{path}: saved by {count} process(es); resume it with the same number "
                              f"(this run has {distributed.world_size()})")
    load_state(model, resume["model"], path)
    try:
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None and resume.get("scheduler"):
            scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
    except (KeyError, ValueError) as error:
        raise CheckpointError(f"{path}: optimizer/scheduler state does not fit this run ({error})") from error
    set_rng_state(states[distributed.rank()])
    log.info("resumed from %s at epoch %d, step %d", path, resume["epoch"], resume["step"])
    return resume["epoch"], resume["batch_in_epoch"], resume["step"], resume.get("best")


@dataclass
class Optimisation:
    """What updates the weights: the optimizer, its schedule (stepped per epoch or per step) and the fp16 scaler."""
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    per_step: bool
    scaler: torch.amp.GradScaler | None

    def state(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "scaler": self.scaler.state_dict() if self.scaler else None}


def optimisation(cfg: DictConfig, model: torch.nn.Module, pretrained: list[torch.nn.Module],
                 amp_dtype: torch.dtype | None) -> Optimisation:
    """`optim` over the trainable parameters (the `pretrained` ones at `train.encoder_lr`), `scheduler`, and a
    gradient scaler for fp16."""
    encoder_lr = cfg.train.encoder_lr if cfg.train.encoder_lr is not None else cfg.optim.lr
    optimizer = instantiate(cfg.optim)(optimizer_groups(model, pretrained, encoder_lr))
    scheduler = instantiate(cfg.scheduler.build)(optimizer) if cfg.scheduler.build else None
    return Optimisation(optimizer, scheduler, scheduler is not None and cfg.scheduler.interval == "step",
                        torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None)


class BestSoFar:
    """The best validation so far by `train.select_metric`, in the direction the task gives it; kept in checkpoints,
    so a resumed run goes on comparing against the same best."""

    def __init__(self, select: str, metrics: dict[str, str], task: str, saved: dict | None = None):
        if select not in metrics:
            raise ValueError(f"train.select_metric={select!r} is not a validation metric of task {task!r}; "
                             f"choose from {', '.join(metrics)}")
        self.select, self.maximise = select, metrics[select] == "max"
        self.best = saved or {"value": None, "epoch": None, "step": None}

    def improved(self, metrics: dict) -> bool:
        """Whether `metrics` (with epoch and step) beat the best so far; if so they become the best."""
        value, best = metrics[self.select], self.best["value"]
        if best is not None and not (value > best if self.maximise else value < best):
            return False
        self.best = {"value": value, "epoch": metrics["epoch"], "step": metrics["step"]}
        return True


def fit(cfg: DictConfig, run: TaskRun, device: torch.device, amp_dtype: torch.dtype | None, resume: dict | None,
        run_log: RunLog) -> dict:
    """Train `run.model` for `train.epochs` (or `train.max_steps`), validating after each epoch; -> final metrics."""
    model, train_cfg = run.model, cfg.train
    best = BestSoFar(train_cfg.select_metric, run.metrics, cfg.task.name)
    parallel = model
    if distributed.world_size() > 1:  # gradients averaged across processes; frozen parameters are left out
        parallel = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = optimisation(cfg, model, run.pretrained, amp_dtype)

    epoch, batch_in_epoch, step = 0, 0, 0
    if resume is not None:
        epoch, batch_in_epoch, step, saved_best = restore(resume, train_cfg.resume, model, opt.optimizer,
                                                          opt.scheduler, opt.scaler)
        best.best = saved_best or best.best
    steps_at_epoch_start = step - batch_in_epoch

    def payload(metrics: dict | None) -> dict:  # called on every rank: the RNG states are gathered from all of them
        return {**run.extras, "model": model.state_dict(), **opt.state(), "epoch": epoch,
                "batch_in_epoch": batch_in_epoch, "step": step, "rng": distributed.gather_list(rng_state()),
                "metrics": metrics, "best": best.best, "config_yaml": OmegaConf.to_yaml(cfg, resolve=True)}

    def on_step(done: int, loss: float) -> None:
        nonlocal step, batch_in_epoch
        step, batch_in_epoch = done, done - steps_at_epoch_start
        run_log.step(step, epoch, loss, opt.optimizer.param_groups[0]["lr"])
        if train_cfg.checkpoint_every and step % train_cfg.checkpoint_every == 0:
            run_log.checkpoint(payload(None), "last.pt")

    metrics, max_steps = None, train_cfg.max_steps
    while epoch < train_cfg.epochs and (max_steps is None or step < max_steps):
        run.sampler.set_epoch(epoch, skip=batch_in_epoch * train_cfg.batch_size)
        steps_at_epoch_start = step - batch_in_epoch
        step, stopped = train_one_epoch(parallel, run.train_loader, opt.optimizer, device,
                                        lambda batch: run.loss(parallel, batch), step=step, max_steps=max_steps,
                                        amp_dtype=amp_dtype, scaler=opt.scaler, grad_clip=train_cfg.grad_clip,
                                        scheduler=opt.scheduler if opt.per_step else None, on_step=on_step,
                                        desc=f"epoch {epoch + 1}/{train_cfg.epochs}",
                                        micro_batch=train_cfg.get("micro_batch"))
        if stopped:  # a run stopped mid-epoch keeps (epoch, batch_in_epoch) so a resume continues it
            batch_in_epoch = step - steps_at_epoch_start
        else:
            epoch, batch_in_epoch = epoch + 1, 0
            if opt.scheduler is not None and not opt.per_step:
                opt.scheduler.step()
        metrics, examples = run.validate()
        metrics.update(epoch=epoch, step=step)
        log.info("epoch %d step %d | %s", epoch, step, run.summary(metrics))
        run_log.validation(metrics, examples, step, names=tuple(run.metrics))
        if best.improved(metrics):
            run_log.checkpoint(payload(metrics), "best.pt")
        run_log.checkpoint(payload(metrics), "last.pt")

    if metrics is None:
        raise RuntimeError(f"nothing to train: epoch {epoch} >= train.epochs={train_cfg.epochs} "
                           f"or step {step} >= train.max_steps={max_steps}")
    result = {**metrics, "select_metric": best.select, "select": best.best["value"], "best": best.best}
    run_log.finish(result)
    return result
