"""Collect the runs of a Hydra multirun folder into one table sorted by the selection metric, a CSV and a plot.

Which way is better comes from the metric itself (`captioning.tasks.direction`: lower for loss and
perplexity, higher for the others), as the training run chose its best.pt.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from captioning.tasks import direction


@dataclass
class SweepRun:
    job: str                              # the job folder, relative to the sweep folder (Hydra's job number)
    params: dict[str, str]                # command-line overrides of this job, as Hydra saved them
    metrics: dict | None                  # metrics.json, None when the job did not finish


def load_runs(sweep_dir: str | Path) -> list[SweepRun]:
    """Every job folder under `sweep_dir` (found by its `.hydra/overrides.yaml`), in job order."""
    sweep_dir = Path(sweep_dir)
    runs = []
    for overrides_file in sweep_dir.glob("**/.hydra/overrides.yaml"):
        job_dir = overrides_file.parent.parent
        params = dict(item.lstrip("+~").split("=", 1) for item in OmegaConf.load(overrides_file) if "=" in item)
        metrics_file = job_dir / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else None
        runs.append(SweepRun(str(job_dir.relative_to(sweep_dir)), params, metrics))
    if not runs:
        raise FileNotFoundError(f"{sweep_dir}: no Hydra job folders (*/.hydra/overrides.yaml) under it")
    return sorted(runs, key=lambda run: [int(p) if p.isdigit() else p for p in Path(run.job).parts])


def swept_parameters(runs: list[SweepRun]) -> list[str]:
    """Override keys whose value differs between runs (keys every run shares are settings, not sweep axes)."""
    keys = list(dict.fromkeys(key for run in runs for key in run.params))
    return [key for key in keys if len({run.params.get(key) for run in runs}) > 1]


def summary_rows(runs: list[SweepRun]) -> tuple[str, list[dict]]:
    """(selection metric name, one row per run) sorted best first; unfinished runs come last."""
    finished = [run for run in runs if run.metrics is not None]
    metric_names = {run.metrics["select_metric"] for run in finished}
    if len(metric_names) > 1:
        raise ValueError(f"runs select on different metrics {sorted(metric_names)}; summarise each sweep on its own")
    metric = metric_names.pop() if metric_names else "select"
    sign = -1 if direction(metric) == "maximize" else 1
    swept = swept_parameters(runs)
    rows = []
    for run in runs:
        best = (run.metrics or {}).get("best") or {}
        value = run.metrics["select"] if run.metrics is not None else None
        rows.append({"job": run.job, **{key: run.params.get(key, "") for key in swept},
                     metric: value, "best_epoch": best.get("epoch"), "best_step": best.get("step"),
                     "status": "done" if run.metrics is not None else "unfinished"})
    rows.sort(key=lambda row: (row[metric] is None or _nan(row[metric]),
                               sign * row[metric] if row[metric] is not None and not _nan(row[metric]) else 0.0))
    return metric, rows


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def format_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    cells = [[_cell(row[c]) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if isinstance(value, float) else str(value)  # metrics are on the 0-100 scale


def write_csv(rows: list[dict], path: Path) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_sweep(rows: list[dict], params: list[str], metric: str, path: Path) -> Path:
    """One panel per swept parameter: the selection metric of each finished run against its value."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    done = [row for row in rows if row[metric] is not None]
    panels = params or ["job"]
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), squeeze=False)
    for axis, param in zip(axes[0], panels, strict=True):
        values = [row[param] for row in done]
        numbers = _as_numbers(values)
        if numbers is not None:
            axis.plot(numbers, [row[metric] for row in done], "o")
            if min(numbers) > 0 and max(numbers) / min(numbers) >= 10:
                axis.set_xscale("log")
        else:  # categorical: one x position per distinct value
            labels = sorted(set(values))
            axis.plot([labels.index(v) for v in values], [row[metric] for row in done], "o")
            axis.set_xticks(range(len(labels)), labels, rotation=30)
        axis.set(xlabel=param, ylabel=f"best validation {metric}", title=param)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _as_numbers(values: list[str]) -> list[float] | None:
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        return None


def seed_rows(runs: list[SweepRun], metric: str) -> list[dict]:
    """Finished runs that differ only in `seed`, one row per group: the number of seeds and mean +- std (sample
    standard deviation, n - 1) of the best validation `metric` and of every test metric all members report.
    Empty when `seed` was not swept."""
    swept = swept_parameters(runs)
    if "seed" not in swept:
        return []
    others = [key for key in swept if key != "seed"]
    groups: dict[tuple, list[SweepRun]] = {}
    for run in runs:
        if run.metrics is not None:
            groups.setdefault(tuple(run.params.get(key, "") for key in others), []).append(run)
    rows = []
    for key, members in groups.items():
        values = {f"val {metric}": [run.metrics["select"] for run in members]}
        tests = [run.metrics.get("test") or {} for run in members]
        for name in (tests[0] if tests else {}):
            if all(isinstance(test.get(name), (int, float)) and not isinstance(test.get(name), bool) for test in tests):
                values[f"test {name}"] = [test[name] for test in tests]
        rows.append({**dict(zip(others, key, strict=True)), "seeds": len(members),
                     **{name: mean_std(numbers) for name, numbers in values.items()}})
    return rows


def mean_std(values: list[float]) -> str:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return f"{mean:.2f}"
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
    return f"{mean:.2f} +- {std:.2f}"


def summarize_sweep(sweep_dir: str | Path, output_dir: str | Path | None = None) -> dict:
    """Table (text), rows, the paths of `summary.csv` and `summary.png` (written to `output_dir` or `sweep_dir`), and
    when seeds were swept, `seed_rows` / `seed_table`: mean +- std over the runs that differ only in seed."""
    runs = load_runs(sweep_dir)
    metric, rows = summary_rows(runs)
    output_dir = Path(output_dir or sweep_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    seeds = seed_rows(runs, metric)
    return {"metric": metric, "rows": rows, "table": format_table(rows), "seed_rows": seeds,
            "seed_table": format_table(seeds) if seeds else "",
            "csv": write_csv(rows, output_dir / "summary.csv"),
            "plot": plot_sweep(rows, swept_parameters(runs), metric, output_dir / "summary.png")}
