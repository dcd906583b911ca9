"""Training curves as a picture: train loss per step and validation metrics per evaluation."""
from __future__ import annotations

import json
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def plot_training(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """Read `steps.jsonl` and `validation.jsonl` of a run folder and write `curves.png` beside them."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    steps, validation = _rows(run_dir / "steps.jsonl"), _rows(run_dir / "validation.jsonl")
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    left.plot([r["step"] for r in steps], [r["loss"] for r in steps], lw=0.8, label="train")
    left.plot([r["step"] for r in validation], [r["loss"] for r in validation], "o-", label="validation")
    left.set(xlabel="step", ylabel="cross-entropy per word", title="loss")
    left.legend()
    for name in ("BLEU-1", "BLEU-4", "CIDEr", "accuracy"):
        if validation and name in validation[0]:
            right.plot([r["step"] for r in validation], [r[name] for r in validation], "o-", label=name)
    right.set(xlabel="step", ylabel="score (0-100)", title="validation (greedy)")
    right.legend()
    figure.tight_layout()
    output = Path(output) if output else run_dir / "curves.png"
    figure.savefig(output, dpi=110)
    plt.close(figure)
    return output
