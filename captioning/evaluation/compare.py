"""Is one recipe better than another on the same images, or is the gap noise? A paired bootstrap over the images
(a confidence interval of the difference) and a paired sign-flip permutation test (a p-value), on the per-image
scores that evaluations write to `per_image.csv`.

Only metrics whose corpus score is the mean of the per-image scores are compared (CIDEr-D, ROUGE-L, SPICE), so the
means here are the scores in `metrics.json`. Each side may be several runs (seeds): a side's score per image is
the mean over its runs, and the interval is then over which images were drawn, for the seed-averaged scores.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from captioning.config.choices import MEAN_METRICS  # corpus score = mean of the per-image scores
from captioning.data.records import DataError
from captioning.evaluation.report import per_image_rows

CHUNK = 1000  # resamples drawn at a time: (CHUNK, images) indices stay small on COCO's 5,000 test images


@dataclass(frozen=True)
class PerImage:
    """One evaluation's per-image scores of one metric, in file order, with each image's references."""
    path: Path
    scores: dict[str, float]          # image id -> score (0-100)
    references: dict[str, str]        # image id -> the references as written (a JSON list)


def read_per_image(folder: str | Path, metric: str) -> PerImage:
    """`folder/per_image.csv` (what scripts/evaluate.py and train.evaluate_test write) -> its `metric` column."""
    path = Path(folder) / "per_image.csv"
    if not path.is_file():
        raise DataError(f"{path}: not found (an evaluation's output folder holds per_image.csv)")
    scores, references = {}, {}
    for line, key, row in per_image_rows(path, ["image_id", "references", metric]):
        try:
            score = float(row[metric])
        except (TypeError, ValueError):
            raise DataError(f"{path}: line {line}: {metric} {row[metric]!r} of image id {key!r} "
                            "is not a number") from None
        if not np.isfinite(score):
            raise DataError(f"{path}: line {line}: {metric} of image id {key!r} is {score}")
        scores[key], references[key] = score, row["references"]
    if not scores:
        raise DataError(f"{path}: no images")
    return PerImage(path, scores, references)


def side_scores(evaluations: list[PerImage], reference: PerImage) -> np.ndarray:
    """(runs, images) scores of one side, in `reference`'s image order, after checking that every run scored
    exactly its images against the same references (CIDEr-D's document frequencies come from the references:
    scores against other references are on another scale)."""
    ids = list(reference.scores)
    for run in evaluations:
        missing, extra = sorted(set(ids) - set(run.scores)), sorted(set(run.scores) - set(ids))
        if missing or extra:
            raise DataError(f"{run.path}: not the images of {reference.path}: "
                            + (f"missing {len(missing)} (first {missing[0]!r})" if missing else "")
                            + ("; " if missing and extra else "")
                            + (f"{len(extra)} others (first {extra[0]!r})" if extra else ""))
        changed = next((key for key in ids if run.references[key] != reference.references[key]), None)
        if changed is not None:
            raise DataError(f"{run.path}: image id {changed!r} has other references than in {reference.path}; "
                            "scores against other references are not comparable")
    return np.array([[run.scores[key] for key in ids] for run in evaluations], dtype=np.float64)


def paired_difference(base: np.ndarray, other: np.ndarray, *, samples: int, seed: int,
                      confidence: float) -> dict:
    """base, other (images,) paired scores -> the mean difference, its bootstrap interval (absolute and relative
    to the base mean) and the two-sided sign-flip permutation p-value of "no difference"."""
    difference = other - base
    rng = np.random.default_rng(seed)
    boot_difference, boot_relative, flipped = [], [], []
    for start in range(0, samples, CHUNK):
        rows = min(CHUNK, samples - start)
        index = rng.integers(0, len(base), size=(rows, len(base)))            # (rows, images) resampled images
        boot_difference.append(difference[index].mean(1))
        boot_relative.append(boot_difference[-1] / np.maximum(base[index].mean(1), 1e-12))
        signs = rng.integers(0, 2, size=(rows, len(base))) * 2 - 1             # (rows, images) of +-1
        flipped.append(np.abs((signs * difference).mean(1)))
    tail = (1 - confidence) / 2 * 100
    observed = float(difference.mean())
    extreme = int((np.concatenate(flipped) >= abs(observed) - 1e-12).sum())
    return {"base": float(base.mean()), "other": float(other.mean()), "difference": observed,
            "relative": observed / base.mean() if base.mean() > 0 else float("nan"),
            "interval": [float(v) for v in np.percentile(np.concatenate(boot_difference), [tail, 100 - tail])],
            "relative_interval": [float(v) for v in np.percentile(np.concatenate(boot_relative), [tail, 100 - tail])],
            "p_value": (extreme + 1) / (samples + 1)}


def compare_evaluations(base: list[str], other: list[str], *, metric: str, samples: int, seed: int,
                        confidence: float) -> dict:
    """Evaluation folders of the base recipe and of the other (one per seed each) -> per-run scores and the paired
    comparison of the seed means, image by image."""
    if metric not in MEAN_METRICS:
        raise ValueError(f"metric={metric!r}: expected one of {' | '.join(MEAN_METRICS)} (a per-image mean)")
    runs = {side: [read_per_image(folder, metric) for folder in folders]
            for side, folders in (("base", base), ("other", other))}
    scores = {side: side_scores(evaluations, runs["base"][0]) for side, evaluations in runs.items()}
    result = paired_difference(scores["base"].mean(0), scores["other"].mean(0), samples=samples, seed=seed,
                               confidence=confidence)
    return {"metric": metric, "images": scores["base"].shape[1], "samples": samples, "seed": seed,
            "confidence": confidence,
            "runs": {side: [{"folder": str(run.path.parent), "score": float(row.mean())}
                            for run, row in zip(runs[side], scores[side], strict=True)] for side in runs},
            **result}


def format_comparison(result: dict) -> str:
    """The comparison as a few lines of text."""
    def side(name: str) -> str:
        values = [run["score"] for run in result["runs"][name]]
        spread = f" (runs: {', '.join(f'{v:.2f}' for v in values)}; std {np.std(values, ddof=1):.2f})" \
            if len(values) > 1 else ""
        return f"{name:5s} {result[name]:7.2f}{spread}"

    level = f"{result['confidence'] * 100:g}%"
    low, high = result["interval"]
    rel_low, rel_high = result["relative_interval"]
    return "\n".join([
        f"{result['metric']} on {result['images']} images, paired by image ({result['samples']} resamples, "
        f"seed {result['seed']}):", side("base"), side("other"),
        f"other - base: {result['difference']:+.2f} ({result['relative'] * 100:+.1f}%), {level} interval "
        f"[{low:+.2f}, {high:+.2f}] ([{rel_low * 100:+.1f}%, {rel_high * 100:+.1f}%])",
        f"p-value of no difference (paired sign flips): {result['p_value']:.4f}"])


def write_comparison(result: dict, output: str | Path) -> None:
    Path(output).write_text(json.dumps(result, indent=2))
