"""Training epochs for any loss, and activity-recognition evaluation: plain functions with explicit arguments.

`train_epoch` is `engine.train_one_epoch` with the loss passed in, so one loop trains both the
activity classifier (cross-entropy on labels) and the clip captioner (`engine.caption_loss`).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioning.engine import autocast, caption_loss
from captioning.models.captioner import CaptionModel
from captioning.models.video import ActivityModel

LossFn = Callable[[dict], torch.Tensor]  # a batch already on the device -> scalar loss


def activity_loss(model: ActivityModel, cached: bool) -> LossFn:
    """Cross-entropy of the clip's class; `cached` batches hold per-frame features, not frames."""
    def loss(batch: dict) -> torch.Tensor:
        clips = batch["input"] if cached else model.encoder(batch["input"])
        return F.cross_entropy(model.head(clips).float(), batch["label"])
    return loss


def clip_caption_loss(model: CaptionModel, cached: bool) -> LossFn:
    def loss(batch: dict) -> torch.Tensor:
        clips = batch["input"] if cached else model.encoder(batch["input"])
        return caption_loss(model.decoder(clips, batch["tokens"]), batch["tokens"])
    return loss


def to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def train_epoch(model: torch.nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, device: torch.device,
                loss_fn: LossFn, *, step: int, max_steps: int | None, amp_dtype: torch.dtype | None = None,
                scaler: torch.amp.GradScaler | None = None, grad_clip: float | None = None, scheduler=None,
                on_step: Callable[[int, float], None] | None = None, desc: str = "train") -> tuple[int, bool]:
    """Train until the loader is exhausted or `max_steps` is reached -> (step, stopped_early)."""
    model.train()
    progress = tqdm(loader, desc=desc, leave=False, dynamic_ncols=True)
    for batch in progress:
        if max_steps is not None and step >= max_steps:
            return step, True
        with autocast(device, amp_dtype):
            loss = loss_fn(to_device(batch, device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower optim.lr or set train.grad_clip")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
        else:
            loss.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        if scheduler is not None:
            scheduler.step()
        step += 1
        progress.set_postfix(loss=f"{loss.item():.3f}", step=step)
        if on_step is not None:
            on_step(step, loss.item())
    return step, False


@torch.no_grad()
def predict_activities(model: ActivityModel, loader: DataLoader, device: torch.device, *, cached: bool,
                       amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """-> predicted classes (N,), true classes (N,) in record-index order, and the mean cross-entropy."""
    model.eval()
    logits_of, labels_of, total = {}, {}, 0.0
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, amp_dtype):
            logits = model.head(batch["input"] if cached else model.encoder(batch["input"])).float()  # (B, K)
        total += F.cross_entropy(logits, batch["label"], reduction="sum").item()
        for index, row, label in zip(batch["index"].tolist(), logits.argmax(1).tolist(), batch["label"].tolist()):
            logits_of[index], labels_of[index] = row, label
    order = sorted(logits_of)
    return (torch.tensor([logits_of[i] for i in order]), torch.tensor([labels_of[i] for i in order]),
            total / max(len(order), 1))


def confusion_matrix(predicted: torch.Tensor, target: torch.Tensor, num_classes: int) -> np.ndarray:
    """(K, K) counts: row = true class, column = predicted class."""
    counts = torch.bincount(target * num_classes + predicted, minlength=num_classes * num_classes)
    return counts.view(num_classes, num_classes).numpy()


def activity_metrics(predicted: torch.Tensor, target: torch.Tensor, loss: float, classes: list[str]) -> dict:
    """Top-1 accuracy (0-100), mean per-class accuracy (0-100), loss and the confusion matrix (a nested list)."""
    matrix = confusion_matrix(predicted, target, len(classes))
    per_class = matrix.diagonal() / np.maximum(matrix.sum(1), 1)
    return {"loss": loss, "accuracy": 100.0 * float((predicted == target).float().mean()),
            "mean_class_accuracy": 100.0 * float(per_class[matrix.sum(1) > 0].mean()),
            "confusion": matrix.tolist()}


# What activity validation returns, so `train.select_metric` can be checked before the first epoch.
ACTIVITY_METRICS = ("loss", "accuracy", "mean_class_accuracy")
