"""The task contract and registry, and reading checkpoints for a task.

A task (image captioning, video description, activity recognition) supplies what differs between
runs: its data, its model, its loss, its validation metrics and its checkpoint extras, as a
`TaskRun` for the one loop (`training/loop.py:fit`); and how to evaluate and use a checkpoint.
A checkpoint's `task` is looked up in `TASKS`; an unknown name is refused.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import torch
from omegaconf import DictConfig

from captioning import distributed
from captioning.checkpoint import CheckpointError, load_checkpoint, load_state
from captioning.data.loading import load_splits
from captioning.registry import Registry, SpecError, plain
from captioning.training.loop import TaskRun
from captioning.training.run_log import RunLog

log = logging.getLogger(__name__)

TASKS = Registry("task")


class Task:
    name: ClassVar[str]
    metrics: ClassVar[dict[str, str]]  # validation metric -> "max" | "min": which way is better
    label_part: ClassVar[str]          # the model part that reads the labels (decoder: vocabulary, classifier: classes)
    objectives: ClassVar[tuple[str, ...]] = ("xe",)  # train.objective values the task trains with
    ensembles: ClassVar[bool] = False  # whether evaluate/caption take a list of checkpoints (an ensemble)

    def load_data(self, cfg: DictConfig, captions: bool) -> dict[str, list]:
        """The run's splits, checked; rank 0 reads (and maybe generates) them first, the other ranks after it."""
        if not distributed.is_main():
            distributed.barrier()
        reads_test = bool(cfg.train.get("evaluate_test") or cfg.train.get("show_examples"))
        splits = load_splits(cfg.data, captions=captions, also_check=("test",) if reads_test else ())
        if distributed.is_main():
            distributed.barrier()
        self.has_test = bool(splits.get("test"))
        return splits

    def setup(self, cfg: DictConfig, device: torch.device, amp_dtype: torch.dtype | None, resume: dict | None,
              init: dict | None, run_log: RunLog) -> TaskRun:
        """Data, model and batches of a run; `resume` / `init`: the train.resume / train.init_from checkpoints
        (already checked). The labels (vocabulary, classes) come from them when their label part is taken over."""
        raise NotImplementedError

    def finish(self, cfg: DictConfig, run: TaskRun, result: dict, device: torch.device) -> None:
        """After training, on rank 0: show examples, score the test split (`train.evaluate_test`)."""

    def check_payload(self, payload: dict, path: str | Path) -> None:
        """Refuse a checkpoint whose model spec or labels this task cannot rebuild (raise SpecError/ValueError)."""
        raise NotImplementedError

    def evaluate(self, cfg: DictConfig) -> dict:
        raise NotImplementedError

    def caption(self, cfg: DictConfig) -> list[dict]:
        raise CheckpointError(f"{cfg.checkpoint}: a {self.name!r} checkpoint writes no captions; "
                              "scripts/evaluate.py scores it on a split")


def task_of(name: str, where: str) -> Task:
    return TASKS.get(name, where)()


def read_checkpoint(path: str | Path, expect_task: str | tuple[str, ...] | None = None) -> tuple[dict, Task]:
    """Load a checkpoint and check it fully before anything is built: no code named anywhere, a registered
    task, a model spec of registered parts with known plain arguments, labels of the right form."""
    payload = load_checkpoint(path, expect_task=expect_task)
    try:
        task = task_of(payload["task"], "task")
        task.check_payload(payload, path)
    except (SpecError, ValueError, TypeError, KeyError) as error:
        raise CheckpointError(f"{path}: {error}") from None
    return payload, task


def part_prefixes(model: torch.nn.Module) -> dict[str, str]:
    """{part name: its state-dict key prefix}, stored in checkpoints so another model can take single parts."""
    names = {id(module): name for name, module in model.named_modules()}
    return {part: names[id(module)] + "." for part, module in model.parts().items()}


def shared_parts(model_parts: tuple[str, ...], start: dict | None) -> list[str]:
    """The parts a new model takes from a start checkpoint: those both have (all of them when resuming)."""
    return [part for part in model_parts if start is not None and part in start.get("parts", {})]


def slow_parts(model: torch.nn.Module, label_part: str, init: dict | None) -> list[torch.nn.Module]:
    """The parts trained at `train.encoder_lr`: the encoder, and whatever `train.init_from` provides except the
    label part (a copied decoder or classifier keeps the optimizer's own lr). Depends on the config only, so a
    resumed run has the same optimizer groups."""
    provided = set(init.get("parts", {})) if init is not None else set()
    return [module for name, module in model.parts().items()
            if name == "encoder" or (name in provided and name != label_part)]


def warm_start(model: torch.nn.Module, start: dict, path: str | Path) -> list[str]:
    """`train.init_from`: copy every part this model shares with the checkpoint (e.g. an activity model's frame
    encoder and clip LSTM into a video captioner); the other parts keep their fresh initialisation."""
    copied = []
    for part, module in model.parts().items():
        prefix = start.get("parts", {}).get(part)
        if prefix is None:
            continue
        state = {key[len(prefix):]: value for key, value in start["model"].items() if key.startswith(prefix)}
        load_state(module, state, path, what=part)
        copied.append(part)
    log.info("%s: parts %s start from %s (a %s checkpoint); the others start fresh", type(model).__name__,
             ", ".join(copied) or "none", path, start["task"])
    return copied


def data_extras(data_cfg: DictConfig) -> dict:
    """What a checkpoint keeps of its data config: the source spec and how its files may be read."""
    return {"name": data_cfg.name, "source": plain(data_cfg.source),
            "allow_outside_root": bool(data_cfg.get("allow_outside_root", False))}


def image_encoder(model: torch.nn.Module):
    """The image encoder of a model (inside the per-frame wrapper of clip models)."""
    return getattr(model.encoder, "encoder", model.encoder)


def encoder_extras(model: torch.nn.Module) -> dict:
    """What a checkpoint records of its encoder's weights: the pretrained weights' identity while frozen (feature
    stores check it), None once trained (its features are its own)."""
    encoder = image_encoder(model)
    return {"encoder_weights": None if encoder.trainable else encoder.weights}


def inherit_encoder_identity(model: torch.nn.Module, start: dict | None, shared: set[str] | list[str]) -> None:
    """An encoder whose weights come from a checkpoint (resume, `train.init_from`) is built without loading its
    pretrained weights; if it stays frozen, it holds what the checkpoint recorded (None when not recorded), so a
    feature store made from those weights still serves the run, and one made from other weights is refused."""
    if start is None or "encoder" not in shared:
        return
    encoder = image_encoder(model)
    recorded = start.get("encoder_weights")
    encoder.weights = recorded if isinstance(recorded, str) and not encoder.trainable else None
