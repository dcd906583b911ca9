"""LRCN activity recognition: a frame CNN, a clip LSTM and a classifier over clips with one label each."""
from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch.utils.data import DataLoader

from captioning import distributed
from captioning.checkpoint import CheckpointError, load_state
from captioning.data.datasets import LabelledClips, collate_labelled_clips
from captioning.data.encoding import cache_features
from captioning.data.images import check_preprocess
from captioning.data.inputs import ClipInputs
from captioning.data.loading import make_loader
from captioning.data.records import check_inputs
from captioning.data.sampler import EpochSampler
from captioning.data.sources.clips import check_labels
from captioning.data.transforms import build_transform
from captioning.evaluation.classification import ACTIVITY_METRICS, activity_metrics, plot_confusion
from captioning.evaluation.report import claim_outputs, evaluation_id, record_outputs, sha256_of
from captioning.execution import autocast, resolve_device, to_device
from captioning.inference.scoring import read_split
from captioning.models.caption_model import (
    build_activity_model,
    build_from_file,
    check_model_spec,
)
from captioning.registry import SpecError, plain
from captioning.tasks.base import (
    TASKS,
    Task,
    data_extras,
    part_prefixes,
    read_checkpoint,
    shared_parts,
    slow_parts,
    warm_start,
)
from captioning.tasks.captioning import in_order
from captioning.training.loop import TaskRun
from captioning.training.run_log import RunLog

log = logging.getLogger(__name__)


@torch.no_grad()
def predict(model, loader, device: torch.device, *, cached: bool,
            amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """-> predicted classes (N,), true classes (N,) in record-index order, and the mean cross-entropy.
    Under DDP each rank predicts its shard of the loader and the results are merged."""
    model.eval()
    rows, total = {}, 0.0
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, amp_dtype):
            logits = model.logits(batch["input"], cached).float()  # (B, K)
        total += F.cross_entropy(logits, batch["label"], reduction="sum").item()
        for index, row, label in zip(batch["index"].tolist(), logits.argmax(1).tolist(), batch["label"].tolist(),
                                     strict=True):
            rows[index] = (row, label)
    rows = distributed.gather_dict(rows)
    total, _ = distributed.sum_all(total, 0, device=device)
    order = sorted(rows)
    return (torch.tensor([rows[i][0] for i in order]), torch.tensor([rows[i][1] for i in order]),
            total / max(len(order), 1))


@TASKS.register("activity")
class ActivityTask(Task):
    """Which activity a clip shows: top-1 accuracy on the validation clips picks best.pt by default."""
    name = "activity"
    metrics = ACTIVITY_METRICS
    label_part = "classifier"
    model_parts = ("encoder", "temporal", "classifier")

    def check_payload(self, payload: dict, path: str | Path) -> None:
        classes = payload.get("classes")
        if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
            raise ValueError(f"classes: expected a list of class names, found {str(classes)[:80]}")
        if not isinstance(payload.get("frames"), int) or isinstance(payload["frames"], bool):
            raise ValueError(f"frames: expected an integer, found {payload.get('frames')!r}")
        check_model_spec(payload["model_spec"], self.model_parts, "model_spec")
        problem = check_preprocess(payload["preprocess"])
        if problem:
            raise ValueError(problem)

    def setup(self, cfg: DictConfig, device: torch.device, amp_dtype: torch.dtype | None, resume: dict | None,
              init: dict | None, run_log: RunLog) -> TaskRun:
        splits = self.load_data(cfg, captions=False)
        start = resume or init
        shared = shared_parts(self.model_parts, start)
        classes = check_labels(splits, start["classes"] if self.label_part in shared else None)
        log.info("%d classes: %s", len(classes), ", ".join(classes))
        spec = plain(cfg.model)
        model = build_activity_model(spec, len(classes), pretrained="encoder" not in shared).to(device)
        distributed.broadcast_module(model)
        if resume is None and init is not None:
            warm_start(model, init, cfg.train.init_from)
        trainable = model.encoder.trainable
        inputs = ClipInputs(cfg.data.frames, keep_in_memory=bool(cfg.data.keep_in_memory) and trainable)
        transform = build_transform(model.encoder.preprocess)
        loads = {split: inputs.loader(splits[split], transform) for split in ("train", "val")}
        cached = not trainable
        if cached:  # a frozen frame encoder: every clip is encoded once for the run
            for split, load in loads.items():
                table = cache_features(model.encoder, load, len(splits[split]), stack=inputs.stack,
                                       batch_size=cfg.train.batch_size, device=device, num_workers=cfg.data.num_workers,
                                       amp_dtype=amp_dtype, desc=f"encoding {split} clips")
                loads[split] = lambda i, table=table: (table["frames"][i], table["mask"][i])

        sets = {split: LabelledClips(splits[split], classes, loads[split]) for split in ("train", "val")}
        world, batch_size = distributed.world_size(), cfg.train.batch_size
        sampler = EpochSampler([1] * len(sets["train"]), "random_caption", shuffle=True, seed=cfg.seed,
                               batch_size=batch_size, rank=distributed.rank(), world_size=world)
        train_loader = make_loader(sets["train"], sampler, batch_size // world, cfg.data, device,
                                   collate_fn=collate_labelled_clips)
        val_loader = make_loader(sets["val"], distributed.shard(in_order(len(sets["val"]))), batch_size // world,
                                 cfg.data, device, collate_fn=collate_labelled_clips)
        val_ids = [record.clip_id for record in splits["val"]]

        def validate() -> tuple[dict, list[str]]:
            predicted, target, loss = predict(model, val_loader, device, cached=cached, amp_dtype=amp_dtype)
            return activity_metrics(predicted, target, loss, classes), [
                f"`{val_ids[i]}`: {classes[predicted[i]]} (true: {classes[target[i]]})" for i in range(min(5, len(val_ids)))]

        extras = {"task": self.name, "model_spec": spec, "parts": part_prefixes(model), "classes": classes,
                  "frames": inputs.frames, "preprocess": model.encoder.preprocess,
                  "data": data_extras(cfg.data)}
        return TaskRun(model=model, loss=lambda parallel, batch: parallel(batch["input"], batch["label"], cached),
                       sampler=sampler, train_loader=train_loader, validate=validate, metrics=self.metrics,
                       extras=extras, summary=lambda m: f"val loss {m['loss']:.3f} | top-1 {m['accuracy']:.1f}% | "
                                                        f"mean class {m['mean_class_accuracy']:.1f}%",
                       pretrained=slow_parts(model, self.label_part, init))

    def finish(self, cfg: DictConfig, run: TaskRun, result: dict, device: torch.device) -> None:
        if cfg.train.evaluate_test and self.has_test:
            run_dir = Path(cfg.run_dir)
            report = self.evaluate_checkpoint(run_dir / "checkpoints" / "best.pt", split="test", data=None,
                                              output_dir=run_dir / "test", device=str(device),
                                              allow_hub_model=cfg.model.encoder.get("model"))  # the user's own encoder
            print(report["summary"])
            result["test"] = {name: value for name, value in report["metrics"].items() if not isinstance(value, list)}
            (run_dir / "metrics.json").write_text(json.dumps(result, indent=2))

    def evaluate(self, cfg: DictConfig) -> dict:
        return self.evaluate_checkpoint(cfg.checkpoint, split=cfg.split, data=plain(cfg.data) if cfg.data else None,
                                        output_dir=cfg.output_dir, device=cfg.device, batch_size=cfg.batch_size,
                                        max_items=cfg.max_images, overwrite=cfg.get("overwrite", False),
                                        allow_hub_model=cfg.get("allow_hub_model"))

    @torch.no_grad()
    def evaluate_checkpoint(self, checkpoint: str | Path, *, split: str, data: dict | None, output_dir: str | Path,
                            device: str = "auto", batch_size: int = 32, max_items: int | None = None,
                            overwrite: bool = False, allow_hub_model: str | None = None) -> dict:
        """Classify every clip of `split`: top-1 and mean per-class accuracy (0-100) and the confusion matrix."""
        payload, _ = read_checkpoint(checkpoint, expect_task=self.name)
        output_dir = claim_outputs(output_dir, ("predictions.csv", "confusion.png", "metrics.json"),
                                   evaluation_id("activity", split, checkpoint=checkpoint), overwrite=overwrite)
        classes = payload["classes"]
        data, records = read_split(payload, checkpoint, split, data, max_items)
        records = check_inputs(records, ClipInputs.check, "error", full=False, what="clips")
        check_labels({split: records}, classes)
        device = resolve_device(device)
        try:
            model = build_from_file(lambda: build_activity_model(payload["model_spec"], len(classes), pretrained=False),
                                    payload["model_spec"], payload["model"], allow_hub_model)
        except (SpecError, ValueError) as error:
            raise CheckpointError(f"{checkpoint}: {error}") from None
        load_state(model, payload["model"], checkpoint)
        model.to(device)
        inputs = ClipInputs(payload["frames"])
        loader = DataLoader(LabelledClips(records, classes, inputs.loader(records, build_transform(payload["preprocess"]))),
                            batch_size=batch_size, sampler=in_order(len(records)), collate_fn=collate_labelled_clips)
        start = time.perf_counter()
        predicted, target, loss = predict(model, loader, device, cached=False)
        metrics = activity_metrics(predicted, target, loss, classes)

        with open(output_dir / "predictions.csv", "w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow(["clip_id", "label", "predicted"])
            writer.writerows((record.clip_id, classes[true], classes[guess])
                             for record, true, guess in zip(records, target.tolist(), predicted.tolist(), strict=True))
        plot_confusion(np.array(metrics["confusion"]), classes, output_dir / "confusion.png",
                       f"{split}: top-1 {metrics['accuracy']:.1f}% ({len(records)} clips)")
        report = {"mode": "activity", "task": self.name,
                  "checkpoint": {"path": str(Path(checkpoint).resolve()), "sha256": sha256_of(checkpoint),
                                 "epoch": payload.get("epoch"), "step": payload.get("step")},
                  "data": {"name": data.get("name"), "split": split, "clips": len(records),
                           "full_split": max_items is None, "source": data["source"]},
                  "classes": classes, "frames": payload["frames"], "device": str(device), "metrics": metrics,
                  "seconds": round(time.perf_counter() - start, 1)}
        (output_dir / "metrics.json").write_text(json.dumps(report, indent=2))
        record_outputs(output_dir)  # the files' sha256: a later change to one of them is noticed
        report["summary"] = (f"{split} split: {len(records)} clips, {len(classes)} classes\n"
                             f"  top-1 accuracy       {metrics['accuracy']:6.2f}\n"
                             f"  mean class accuracy  {metrics['mean_class_accuracy']:6.2f}\n"
                             f"confusion matrix: {output_dir / 'confusion.png'}")
        return report
