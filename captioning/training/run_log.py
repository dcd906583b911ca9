"""What a training run writes: step and validation logs, TensorBoard, checkpoints, metrics (rank 0 only)."""
from __future__ import annotations

import json
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter

from captioning import distributed
from captioning.checkpoint import save_checkpoint
from captioning.training.plots import plot_training


class RunLog:
    """Everything written into the run folder goes through here; other DDP ranks write nothing."""

    def __init__(self, run_dir: str | Path, log_every: int):
        self.run_dir = Path(run_dir)
        self.active = distributed.is_main()
        self.log_every = log_every
        if self.active:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            self.steps = open(self.run_dir / "steps.jsonl", "a")

    def text(self, name: str, content: str) -> None:
        if self.active:
            (self.run_dir / name).write_text(content)

    def step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        if not self.active:
            return
        self.steps.write(json.dumps({"step": step, "epoch": epoch, "loss": loss, "lr": lr}) + "\n")
        self.steps.flush()  # a killed run keeps every step it logged
        if step % self.log_every == 0:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def validation(self, metrics: dict, examples: list[str], step: int, names: tuple[str, ...]) -> None:
        """The scalar metrics `names`, a few examples as text, and a line of validation.jsonl (scalars only)."""
        if not self.active:
            return
        for name in names:
            self.writer.add_scalar(f"val/{name}", metrics[name], step)
        self.writer.add_text("val/examples", "\n\n".join(examples), step)
        with open(self.run_dir / "validation.jsonl", "a") as handle:  # a confusion matrix can be large: not here
            handle.write(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}) + "\n")

    def checkpoint(self, payload: dict, name: str) -> None:
        if self.active:
            save_checkpoint(payload, self.run_dir / "checkpoints" / name)

    def finish(self, result: dict) -> None:
        if not self.active:
            return
        self.writer.close()
        self.steps.close()
        (self.run_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        plot_training(self.run_dir)
