"""Scoring a checkpoint (or an ensemble of them) on a split: caption every input, then the COCO caption metrics."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from captioning.checkpoint import load_checkpoint
from captioning.data.clips import ClipRecord
from captioning.data.feature_rows import StoreRows
from captioning.data.features import FeatureStore
from captioning.data.records import DataError, check_inputs, clean_captions
from captioning.data.sources import read_source
from captioning.evaluation.report import (
    claim_outputs,
    evaluation_id,
    format_table,
    score_captions,
    sha256_of,
    write_outputs,
)
from captioning.evaluation.results import write_results
from captioning.inference.captioner import Captioner, check_decode_limits

log = logging.getLogger(__name__)


def read_split(payload: dict, path: str | Path, split: str, data: dict | None, limit: int | None) -> tuple[dict, list]:
    """The records of `split` from `data` (None: the data source saved in the checkpoint), the first `limit` if set."""
    from_file = data is None  # a checkpoint's data source is read, never generated (synthetic sources)
    data = data if data is not None else payload.get("data")
    if not data or "source" not in data:
        raise DataError(f"{path}: stores no data source; choose one with data=...")
    try:
        splits = read_source(data["source"], f"{path}: data.source" if from_file else "data.source",
                             allow_outside_root=data.get("allow_outside_root", False) is True, generate=not from_file)
    except DataError as error:
        if from_file and str(error).startswith("data.source:"):  # name the checkpoint whose spec it is
            raise DataError(f"{path}: {error}") from None
        raise
    if not splits.get(split):
        raise DataError(f"data source {data.get('name', '?')!r} has no '{split}' split (it has {sorted(splits)})")
    records = splits[split]
    if limit is not None:
        log.warning("evaluating only the first %d of the split, not the full split", limit)
        records = records[:limit]
    return data, records


def check_kind(records: list, kind: str, data: dict, checkpoint: str | Path) -> None:
    """Clips given to an image captioner, or images to a clip captioner, are refused by kind, not as unreadable files."""
    data_kind = "clip" if records and isinstance(records[0], ClipRecord) else "image"
    if records and data_kind != kind:
        raise DataError(f"data source {data.get('name', '?')!r}: this data is {data_kind}s and {checkpoint} captions "
                        f"{kind}s; choose data of {kind}s (data=...) or a {data_kind} captioning checkpoint")


def store_rows(captioner: Captioner, features: str | None, records: list, checkpoint: str | Path) -> StoreRows | None:
    """The records' rows of the region store that a model of precomputed regions reads (None for other models)."""
    if captioner.preprocess is not None:
        return None
    if not features:
        raise DataError(f"{checkpoint}: a model of precomputed region features; give the region store that holds "
                        "this split's images with data.features=STORE")
    store = FeatureStore(features)
    store.check_encoder(captioner.model.encoder)
    return store.reader(records, grid=captioner.model.decoder.uses_grid)


def evaluate_checkpoints(checkpoint: str | Path | list, *, task: str, split: str, data: dict | None, decode: dict,
                         output_dir: str | Path, device: str = "auto", batch_size: int = 64,
                         max_items: int | None = None, java: str | None = "auto", spice: bool | str = "auto",
                         meteor: str = "required", overwrite: bool = False, features: str | None = None,
                         allow_hub_model: str | None = None) -> dict:
    """Caption every input of `split` (decoding per `decode`) with one `task` checkpoint, or a list of them (an
    ensemble: the data source is the first member's), and score it with the COCO caption metrics.

    Writes `results.json` (COCO results format), `metrics.json` and `per_image.csv` into `output_dir`.
    A model of precomputed region features captions the split's rows of the region store `features`.
    A hub or URL encoder named by a checkpoint is fetched only when it is `allow_hub_model` (the user's choice).
    """
    paths = [checkpoint] if isinstance(checkpoint, (str, Path)) else list(checkpoint)
    loaded = [(load_checkpoint(path, expect_task=task), path) for path in paths]
    # Before any decoding: output_dir may not hold files another evaluation (or anyone else) wrote.
    evaluation = evaluation_id("checkpoint", split, checkpoint=paths if len(paths) > 1 else paths[0])
    output_dir = claim_outputs(output_dir, ("results.json", "metrics.json", "per_image.csv"), evaluation,
                               overwrite=overwrite)
    captioner = Captioner.from_payloads(loaded, device, allow_hub_model)  # each file is read once
    check_decode_limits(decode, captioner.max_words, str(paths[0]))
    data, records = read_split(loaded[0][0], paths[0], split, data, max_items)
    records = clean_captions(records, f"{split} captions", on_bad_caption="skip")
    kind = captioner.inputs.kind
    check_kind(records, kind, data, paths[0])
    rows = store_rows(captioner, features, records, paths[0])
    if rows is None:
        records = check_inputs(records, captioner.inputs.check, "error", full=False, what=f"{kind}s")
    # Only the best caption is scored; an unset max_words means the training cap, recorded as such.
    decode = {**decode, "n_best": 1, "max_words": captioner.max_words if decode.get("max_words") is None
              else decode["max_words"]}
    start = time.perf_counter()
    captions = (captioner.caption_rows(rows, batch_size=batch_size, **decode) if rows is not None else
                captioner.caption([record.image_path for record in records], batch_size=batch_size, **decode))
    hypotheses = {record.image_id: caption.caption for record, caption in zip(records, captions, strict=True)}
    decode_seconds = time.perf_counter() - start
    references = {record.image_id: record.captions for record in records}

    write_results(hypotheses, output_dir / "results.json")
    start = time.perf_counter()
    scores_report, scores = score_captions(references, hypotheses, java=java, spice=spice, meteor=meteor)
    members = [{"path": str(Path(path).resolve()), "sha256": sha256_of(path), "epoch": payload.get("epoch"),
                "step": payload.get("step")} for payload, path in loaded]
    report = {"mode": "checkpoint", "task": task,
              "checkpoint": members[0] if len(members) == 1 else
              {"path": [member["path"] for member in members], "members": members},
              "data": {"name": data.get("name"), "split": split, "images": len(records),
                       "references": sum(len(c) for c in references.values()), "full_split": max_items is None,
                       "source": data["source"]},
              "decode": decode, "device": str(captioner.device), **scores_report,
              "seconds": {"decode": round(decode_seconds, 1), "score": round(time.perf_counter() - start, 1)}}
    write_outputs(report, scores, references, hypotheses, output_dir, evaluation=evaluation, overwrite=overwrite)
    report["summary"] = format_table(report).replace(" images,", f" {kind}s,", 1)
    return report
