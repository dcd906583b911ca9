"""Five cross-validation folds of one recipe (`data.fold=0..4`, each scored on its test split) pooled into one score
over all their test images: the 1,000 images of the Flickr sample instead of one fold's 200.

The pooled figures are not a mean of the fold scores: the captions and references of the five `per_image.csv` files
are scored again as one evaluation (`report.score_captions`, as scripts/evaluate.py scores a split), so corpus BLEU
and CIDEr's document frequencies span all the images. The fold scores, their mean and standard deviation come
beside it, and the pooled folder's `per_image.csv` is what `evaluation.compare` pairs image by image.
"""
from __future__ import annotations

import json
import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from captioning.data.records import DataError, record_size_error
from captioning.data.sources.flickr import FOLDS  # data.fold=0..4 (fold_split)
from captioning.evaluation.coco import COCO_METRICS
from captioning.evaluation.report import (
    claim_outputs,
    evaluation_id,
    format_table,
    per_image_rows,
    score_captions,
    write_outputs,
)

log = logging.getLogger(__name__)


class FoldError(DataError):
    """Evaluation folders that are not the five disjoint test folds of one recipe."""


@dataclass(frozen=True)
class FoldEvaluation:
    """One fold's evaluation folder: its metrics.json, and its captions and references by image id."""
    folder: Path
    fold: int
    report: dict
    hypotheses: dict[str, str]
    references: dict[str, list[str]]


def read_report(folder: Path) -> dict:
    """folder/metrics.json of a checkpoint evaluation of a fold's whole test split -> the report."""
    path = folder / "metrics.json"
    if (too_big := record_size_error(path)) is not None:
        raise FoldError(too_big)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise FoldError(f"{path}: not a readable evaluation report ({error})") from None
    data = report.get("data") if isinstance(report, dict) else None
    source = data.get("source") if isinstance(data, dict) else None
    if not isinstance(source, dict) or "fold" not in source:
        raise FoldError(f"{path}: no data.source.fold; expected the evaluation of a checkpoint trained with data.fold=K")
    fold = source["fold"]
    if isinstance(fold, bool) or not isinstance(fold, int) or not 0 <= fold < FOLDS:
        raise FoldError(f"{path}: data.source.fold is {fold!r}; expected one of the folds 0..{FOLDS - 1}")
    if data.get("split") != "test" or data.get("full_split") is False:
        raise FoldError(f"{path}: scores {'part of ' if data.get('full_split') is False else ''}the "
                        f"{data.get('split')!r} split; the folds pool whole test splits")
    return report


def read_captions(folder: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """folder/per_image.csv -> ({image id: caption}, {image id: references})."""
    path = folder / "per_image.csv"
    hypotheses, references = {}, {}
    try:
        for line, key, row in per_image_rows(path, ["image_id", "caption", "references"]):
            try:
                refs = json.loads(row["references"])
            except ValueError:
                refs = None
            if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
                raise FoldError(f"{path}: line {line}: references of image id {key!r} are not a JSON list of "
                                "captions")
            hypotheses[key], references[key] = row["caption"], refs
    except OSError as error:
        raise FoldError(f"{path}: cannot be read ({error.strerror or error})") from None
    if not hypotheses:
        raise FoldError(f"{path}: no images")
    return hypotheses, references


def read_fold(folder: str | Path) -> FoldEvaluation:
    folder = Path(folder)
    report = read_report(folder)
    hypotheses, references = read_captions(folder)
    if len(hypotheses) != report["data"].get("images"):
        raise FoldError(f"{folder / 'per_image.csv'}: {len(hypotheses)} images; its metrics.json scored "
                        f"{report['data'].get('images')}")
    return FoldEvaluation(folder, report["data"]["source"]["fold"], report, hypotheses, references)


def check_folds(folds: list[FoldEvaluation]) -> None:
    """Refuse, naming the folder, anything but the folds 0..4 once each, of one data source and one decoding, on
    disjoint images."""
    first, seen, owner = folds[0], {}, {}
    recipe = {key: value for key, value in first.report["data"]["source"].items() if key != "fold"}
    for run in folds:
        if run.fold in seen:
            raise FoldError(f"{run.folder}: fold {run.fold} again (also {seen[run.fold].folder})")
        seen[run.fold] = run
        source = {key: value for key, value in run.report["data"]["source"].items() if key != "fold"}
        if source != recipe:
            raise FoldError(f"{run.folder}: another data source than {first.folder} ({json.dumps(source)})")
        if run.report.get("decode") != first.report.get("decode"):
            raise FoldError(f"{run.folder}: decoded with other settings than {first.folder} "
                            f"({json.dumps(run.report.get('decode'))})")
        for key in run.hypotheses:
            if key in owner:
                raise FoldError(f"{run.folder}: image {key!r} is also in {owner[key]}; the test folds are disjoint")
            owner[key] = run.folder
    missing = sorted(set(range(FOLDS)) - set(seen))
    if missing:
        raise FoldError(f"folds: no evaluation of fold {', '.join(map(str, missing))} among "
                        f"{', '.join(str(run.folder) for run in folds)}")


def spread(folds: list[FoldEvaluation]) -> tuple[dict, dict]:
    """The mean and the standard deviation (n - 1) over the folds of each metric that every fold reports."""
    mean, std = {}, {}
    for name in COCO_METRICS:
        values = [run.report.get("metrics", {}).get(name) for run in folds]
        if all(isinstance(value, (int, float)) and math.isfinite(value) for value in values):
            mean[name], std[name] = statistics.fmean(values), statistics.stdev(values)
    return mean, std


def pool_folds(folders: list[str | Path], output_dir: str | Path, *, java: str | None = "auto",
               spice: bool | str = "auto", meteor: str = "required", overwrite: bool = False) -> dict:
    """The five fold evaluations in `folders` -> one report scored over the union of their test images, with each
    fold's scores and their spread; writes metrics.json and per_image.csv into `output_dir`."""
    folds = sorted((read_fold(folder) for folder in folders), key=lambda run: run.fold)
    check_folds(folds)
    evaluation = evaluation_id("folds", folds=[str(run.folder) for run in folds])
    claim_outputs(output_dir, ("metrics.json", "per_image.csv"), evaluation, overwrite=overwrite)
    hypotheses = {key: caption for run in folds for key, caption in run.hypotheses.items()}
    references = {key: refs for run in folds for key, refs in run.references.items()}
    start = time.perf_counter()
    scores_report, scores = score_captions(references, hypotheses, java=java, spice=spice, meteor=meteor)
    for run in folds:
        if run.report.get("tokenization", {}).get("coco") != scores.tokenizer:
            log.warning("%s: its scores used %s tokenisation; the pooled ones %s", run.folder,
                        run.report.get("tokenization", {}).get("coco"), scores.tokenizer)
    mean, std = spread(folds)
    data = folds[0].report["data"]
    source = {key: value for key, value in data["source"].items() if key != "fold"}
    report = {"mode": "folds",
              "data": {"name": data.get("name"), "split": "test", "images": len(hypotheses),
                       "references": sum(len(refs) for refs in references.values()), "full_split": True,
                       "source": source},
              "decode": folds[0].report.get("decode"),
              "folds": [{"fold": run.fold, "folder": str(run.folder.resolve()), "images": len(run.hypotheses),
                         "checkpoint": run.report.get("checkpoint"), "metrics": run.report.get("metrics")}
                        for run in folds],
              "fold_mean": mean, "fold_std": std, **scores_report,
              "seconds": {"score": round(time.perf_counter() - start, 1)}}
    write_outputs(report, scores, references, hypotheses, output_dir, evaluation=evaluation, overwrite=overwrite)
    return report


def format_folds(report: dict) -> str:
    """The pooled table (as scripts/evaluate.py prints one), then each fold's scores with their mean and std."""
    folds = report["folds"]
    lines = [format_table(report), "",
             f"{'':9} {'pooled':>7} " + " ".join(f"{'fold ' + str(f['fold']):>7}" for f in folds) + "    mean     std"]
    for name in COCO_METRICS:
        if name not in report["fold_mean"]:
            continue
        pooled = report["metrics"].get(name)
        lines.append(f"  {name:<7} {pooled if pooled is not None else float('nan'):7.2f} "
                     + " ".join(f"{f['metrics'][name]:7.2f}" for f in folds)
                     + f" {report['fold_mean'][name]:7.2f} {report['fold_std'][name]:7.2f}")
    lines.append(f"  {'images':<7} {report['data']['images']:7d} " + " ".join(f"{f['images']:7d}" for f in folds))
    return "\n".join(lines)
