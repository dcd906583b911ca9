"""Activity recognition: the training loss and the evaluation, plain functions with explicit arguments.

Training itself runs through `engine.train_one_epoch`, with `activity_loss` here or, for clip
captioning, `engine.caption_batch_loss`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from captioning.engine import LossFn, autocast, to_device
from captioning.models.video import ActivityModel


def activity_loss(model: ActivityModel, cached: bool) -> LossFn:
    """Cross-entropy of the clip's class, summed over the batch; `cached` batches hold per-frame features, not frames."""
    def loss(batch: dict) -> tuple[torch.Tensor, int]:
        clips = batch["input"] if cached else model.encoder(batch["input"])
        return F.cross_entropy(model.head(clips).float(), batch["label"], reduction="sum"), batch["label"].numel()
    return loss


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
