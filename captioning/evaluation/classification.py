"""Activity recognition metrics: top-1 and mean per-class accuracy, the confusion matrix and its picture."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

# What activity validation returns, each with the direction that is better (best.pt selection follows it).
ACTIVITY_METRICS = {"loss": "min", "accuracy": "max", "mean_class_accuracy": "max"}


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


def plot_confusion(matrix: np.ndarray, classes: list[str], path: str | Path, title: str) -> Path:
    """The confusion matrix as a picture: rows true classes, columns predictions, each row normalised."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    rates = matrix / np.maximum(matrix.sum(1, keepdims=True), 1)
    side = 2.0 + 0.45 * len(classes)
    figure, axes = plt.subplots(figsize=(side + 1.2, side))
    image = axes.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    axes.set(xticks=range(len(classes)), yticks=range(len(classes)), xticklabels=classes, yticklabels=classes,
             xlabel="predicted", ylabel="true", title=title)
    plt.setp(axes.get_xticklabels(), rotation=45, ha="right")
    if len(classes) <= 30:  # counts stay readable only for a few classes
        for row in range(len(classes)):
            for column in range(len(classes)):
                axes.text(column, row, int(matrix[row, column]), ha="center", va="center", fontsize=8,
                          color="white" if rates[row, column] > 0.5 else "black")
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return Path(path)
