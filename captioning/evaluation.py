"""Benchmark evaluation of a checkpoint: caption every image of a split, then score the captions.

Writes `results.json` (COCO results format), `metrics.json` and `per_image.csv` into `output_dir`.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

from hydra.utils import instantiate

from captioning.checkpoint import load_checkpoint, saved_config
from captioning.data.records import DataError, clean_captions
from captioning.inference import Captioner
from captioning.results import write_results
from captioning.scoring import score_captions, sha256_of, write_outputs

log = logging.getLogger(__name__)


def split_of(checkpoint: str | Path, payload: dict, split: str, data: dict | None,
             limit: int | None) -> tuple[dict, list]:
    """The records of `split` from `data` (None: the data config saved in the checkpoint), the first `limit` if set."""
    if data is None:
        data = payload.get("config", {}).get("data")
        if data is None:
            raise DataError(f"{checkpoint}: stores no data config; choose one with data=...")
        data = saved_config(data, checkpoint, "data")
    splits = instantiate(data["source"], _convert_="all")
    if not splits.get(split):
        raise DataError(f"data source {data.get('name', '?')!r} has no '{split}' split (it has {sorted(splits)})")
    records = splits[split]
    if limit is not None:
        log.warning("evaluating only the first %d of the split, not the full split", limit)
        records = records[:limit]
    return data, records


def evaluate_checkpoint(checkpoint: str | Path, *, split: str, data: dict | None, decode: dict, output_dir: str | Path,
                        device: str = "auto", batch_size: int = 64, max_images: int | None = None,
                        java: str | None = "auto", spice: bool | str = "auto") -> dict:
    """Caption every image of `split` and score it; `data` None means the data config saved in the checkpoint."""
    payload = load_checkpoint(checkpoint)
    data, records = split_of(checkpoint, payload, split, data, max_images)
    records = clean_captions(records, f"{split} captions", on_bad_caption="skip")

    captioner = Captioner.from_checkpoint(checkpoint, device)
    # Only the best caption is scored; an unset max_length means the training cap, recorded as such.
    max_length = captioner.max_length if decode["max_length"] is None else decode["max_length"]
    decode = {**decode, "n_best": 1, "max_length": max_length}
    start = time.perf_counter()
    captions = captioner.caption([record.image_path for record in records], batch_size=batch_size, **decode)
    hypotheses = {record.image_id: caption.caption for record, caption in zip(records, captions)}
    decode_seconds = time.perf_counter() - start
    references = {record.image_id: record.captions for record in records}

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_results(hypotheses, output_dir / "results.json")
    start = time.perf_counter()
    scores_report, scores = score_captions(references, hypotheses, java=java, spice=spice)
    report = {"mode": "checkpoint",
              "checkpoint": {"path": str(Path(checkpoint).resolve()), "sha256": sha256_of(checkpoint),
                             "epoch": payload.get("epoch"), "step": payload.get("step")},
              "data": {"name": data.get("name"), "split": split, "images": len(records),
                       "references": sum(len(c) for c in references.values()), "full_split": max_images is None,
                       "source": data["source"]},
              "decode": decode, "device": str(captioner.device), **scores_report,
              "seconds": {"decode": round(decode_seconds, 1), "score": round(time.perf_counter() - start, 1)}}
    write_outputs(report, scores, references, hypotheses, output_dir)
    return report
