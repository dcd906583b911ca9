"""Hydra sweeps through the real entry point: a grid multirun, its summary, rerunning one of its saved configs,
an Optuna search, joblib in parallel, and the message when a plugin is missing."""
from __future__ import annotations

import csv
import json
import logging
import os
import runpy
import subprocess
import sys

import pytest
from omegaconf import OmegaConf
from PIL import Image

from captioning import plugins
from captioning.plugins import MissingPlugin, check_plugins, installed
from tests.conftest import CONF, ROOT, tiny_overrides

SWEEP_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def train_cli(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py"), *args], cwd=ROOT, env=SWEEP_ENV,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def train_script_in_process(args: list[str], monkeypatch) -> None:
    """scripts/train.py run as `__main__` with these command-line arguments, in this process (a new interpreter
    costs seconds), on one thread as the grid's process (SWEEP_ENV): losses are compared exactly; the logging
    handlers Hydra installs for the job are removed after it."""
    import torch

    root = logging.getLogger()
    handlers, level, threads = list(root.handlers), root.level, torch.get_num_threads()
    monkeypatch.setattr(sys, "argv", [str(ROOT / "scripts" / "train.py"), *args])
    monkeypatch.setenv("TQDM_DISABLE", "1")
    torch.set_num_threads(1)
    try:
        runpy.run_path(str(ROOT / "scripts" / "train.py"), run_name="__main__")
    finally:
        torch.set_num_threads(threads)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)


def sweep_overrides(synthetic_root) -> list[str]:
    """Tiny training with the decoder size left to the sweep; selection on validation loss (distinct per run,
    and lower is better: the direction comes from the metric)."""
    return [o for o in tiny_overrides(synthetic_root) if not o.startswith("model.decoder.hidden_size=")] + [
        "train.max_steps=3", "train.show_examples=0", "train.select_metric=loss"]


def losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "steps.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory, synthetic_root):
    """`-m optim.lr=... model.decoder.hidden_size=...`: a 2x2 grid, one process, Hydra's basic launcher."""
    sweep_dir = tmp_path_factory.mktemp("grid")
    train_cli(["-m", "optim.lr=1e-3,3e-3", "model.decoder.hidden_size=16,32", *sweep_overrides(synthetic_root),
               f"hydra.sweep.dir={sweep_dir}"])
    return sweep_dir


@pytest.mark.slow
def test_grid_gives_each_run_its_folder(grid_sweep):
    grid = set()
    for job in range(4):
        run = grid_sweep / str(job)
        for name in ("config.yaml", "metrics.json", "checkpoints/best.pt", "checkpoints/last.pt", ".hydra/overrides.yaml"):
            assert (run / name).is_file(), f"{job}/{name}"
        config = OmegaConf.load(run / "config.yaml")  # the job's own resolved config, run_dir included
        assert config.run_dir == str(run)
        grid.add((config.optim.lr, config.model.decoder.hidden_size))
    assert grid == {(1e-3, 16), (1e-3, 32), (3e-3, 16), (3e-3, 32)}


@pytest.mark.slow
def test_summarize_sweep_prints_runs_sorted(grid_sweep, capsys):
    runpy_main = runpy.run_path(str(ROOT / "scripts" / "summarize_sweep.py"))["main"]
    runpy_main([str(grid_sweep)])
    lines = capsys.readouterr().out.splitlines()
    header, rows = lines[0].split(), [line.split() for line in lines[1:5]]
    assert header[:4] == ["job", "optim.lr", "model.decoder.hidden_size", "loss"]
    expected = sorted((json.loads((grid_sweep / str(j) / "metrics.json").read_text())["select"], str(j)) for j in range(4))
    assert [row[0] for row in rows] == [job for _, job in expected]  # lowest validation loss first (loss: lower is better)
    assert [float(row[3]) for row in rows] == pytest.approx([value for value, _ in expected], abs=1e-3)
    assert "4 runs, sorted by best validation loss" in lines[6]
    with open(grid_sweep / "summary.csv") as handle:
        table = list(csv.DictReader(handle))
    assert [row["job"] for row in table] == [job for _, job in expected]
    assert {(row["optim.lr"], row["model.decoder.hidden_size"]) for row in table} == {
        ("0.001", "16"), ("0.001", "32"), ("0.003", "16"), ("0.003", "32")}
    assert Image.open(grid_sweep / "summary.png").size == (800, 340)  # one 4-inch panel per swept parameter


@pytest.mark.slow
def test_rerunning_a_saved_config_reproduces_the_run(grid_sweep, tmp_path, monkeypatch):
    """The documented command: `--config-path RUN/.hydra --config-name config` gives the same losses and metrics
    (the script in this process: the grid above ran it in a new one)."""
    original = grid_sweep / "3"
    train_script_in_process(["--config-path", str(original / ".hydra"), "--config-name", "config",
                             f"hydra.run.dir={tmp_path}"], monkeypatch)
    assert losses(tmp_path) == losses(original) and len(losses(tmp_path)) == 3
    first, second = (json.loads((run / "metrics.json").read_text()) for run in (original, tmp_path))
    assert first == second


@pytest.mark.slow
@pytest.mark.skipif(not installed("hydra_plugins.hydra_optuna_sweeper"), reason="hydra-optuna-sweeper not installed")
def test_optuna_search_reports_best_parameters(tmp_path, synthetic_root, monkeypatch, capsys):
    train_script_in_process(["hparams_search=optuna", "hydra.sweeper.n_trials=3",
                             "model.decoder.hidden_size=choice(16,32)", *sweep_overrides(synthetic_root),
                             f"hydra.sweep.dir={tmp_path}"], monkeypatch)
    printed = capsys.readouterr()
    result = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert set(result.best_params) == {"optim.lr", "model.decoder.hidden_size", "model.decoder.dropout"}
    assert result.best_params["model.decoder.hidden_size"] in (16, 32) and 1e-4 <= result.best_params["optim.lr"] <= 1e-2
    values = [json.loads((tmp_path / str(j) / "metrics.json").read_text())["select"] for j in range(3)]
    assert not (tmp_path / "3").exists()
    assert result.best_value == pytest.approx(min(values))  # select_metric=loss: the sweeper minimised it
    assert "Best parameters" in printed.out + printed.err


@pytest.mark.slow
@pytest.mark.skipif(not installed("hydra_plugins.hydra_joblib_launcher"), reason="hydra-joblib-launcher not installed")
def test_joblib_runs_jobs_in_parallel_processes(tmp_path, synthetic_root):
    train_cli(["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "optim.lr=1e-3,3e-3",
               "model.decoder.hidden_size=16", *sweep_overrides(synthetic_root), "train.max_steps=2",
               f"hydra.sweep.dir={tmp_path}"])
    for job in range(2):
        metrics = json.loads((tmp_path / str(job) / "metrics.json").read_text())
        assert metrics["step"] == 2


def test_missing_plugin_is_named_with_its_pip_package(monkeypatch):
    monkeypatch.setattr(plugins, "installed", lambda module: False)
    with pytest.raises(MissingPlugin, match=r"hparams_search=optuna.*hydra-optuna-sweeper.*install -e '.\[sweeps\]'"):
        check_plugins(["hparams_search=optuna"], CONF)  # found through conf/hparams_search/optuna.yaml's defaults
    with pytest.raises(MissingPlugin, match="hydra-submitit-launcher"):
        check_plugins(["-m", "hydra/launcher=slurm", "optim.lr=1e-3,3e-4"], CONF)  # through conf/hydra/launcher/slurm.yaml
    with pytest.raises(MissingPlugin, match="hydra-joblib-launcher"):
        check_plugins(["hydra/launcher=joblib"], CONF)
    check_plugins(["-m", "experiment=show_and_tell_coco", "optim.lr=1e-3,3e-4", "model/encoder=resnet18",
                   "hydra.run.dir=/tmp/x"], CONF)  # nothing optional asked for: no error


def test_train_script_exits_with_the_message_before_hydra(monkeypatch, capsys):
    monkeypatch.setattr(plugins, "installed", lambda module: False)
    monkeypatch.setattr(sys, "argv", ["scripts/train.py", "hparams_search=optuna"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "scripts" / "train.py"), run_name="__main__")
    assert "pip install -e '.[sweeps]'" in str(exit_info.value.code)
    assert "hydra-optuna-sweeper" in str(exit_info.value.code)


def fake_job(sweep_dir, job: str, overrides: list[str], metrics: dict | None) -> None:
    """A job folder as Hydra and train() leave it (metrics None: the job died before finishing)."""
    hydra_dir = sweep_dir / job / ".hydra"
    hydra_dir.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(overrides), hydra_dir / "overrides.yaml")
    if metrics is not None:
        (sweep_dir / job / "metrics.json").write_text(json.dumps(metrics))


@pytest.mark.parametrize("metric, order", [("CIDEr", ["2", "0", "3", "1"]),  # highest first
                                           ("accuracy", ["2", "0", "3", "1"]),
                                           ("loss", ["3", "0", "2", "1"]),  # lowest first
                                           ("perplexity", ["3", "0", "2", "1"])])
def test_summary_sorts_by_the_metrics_direction_with_unfinished_runs_last(tmp_path, metric, order):
    from tools.sweep_summary import summarize_sweep

    for job, (dropout, value) in enumerate([(0.1, 30.0), (0.2, None), (0.3, 45.5), (0.4, 12.0)]):
        metrics = None if value is None else {"select_metric": metric, "select": value, "best": {"epoch": 3, "step": 9}}
        fake_job(tmp_path, str(job), ["seed=1", f"model.decoder.dropout={dropout}"], metrics)
    summary = summarize_sweep(tmp_path)
    assert summary["metric"] == metric
    assert [row["job"] for row in summary["rows"]] == order  # the dead job last either way
    assert summary["rows"][-1]["status"] == "unfinished" and "seed" not in summary["rows"][0]  # seed was not swept
    assert summary["plot"].is_file()


def test_summary_refuses_mixed_metrics(tmp_path):
    from tools.sweep_summary import summarize_sweep

    fake_job(tmp_path, "0", ["seed=1", "model.decoder.dropout=0.1"], {"select_metric": "CIDEr", "select": 30.0})
    fake_job(tmp_path, "1", ["seed=1", "model.decoder.dropout=0.5"], {"select_metric": "loss", "select": 2.0})
    with pytest.raises(ValueError, match="different metrics"):
        summarize_sweep(tmp_path)


def test_runs_that_differ_only_in_seed_are_summarised_as_mean_and_std(tmp_path, capsys):
    from scripts.summarize_sweep import main
    from tools.sweep_summary import summarize_sweep

    values = {("lstm", 0): (37.0, 40.0), ("lstm", 1): (39.0, 42.0), ("lstm", 2): (41.0, 38.0),
              ("soft_attention", 0): (40.0, 44.0), ("soft_attention", 1): (42.0, 46.0)}
    for job, ((decoder, seed), (val, test)) in enumerate(values.items()):
        fake_job(tmp_path, str(job), [f"seed={seed}", f"model/decoder={decoder}"],
                 {"select_metric": "CIDEr", "select": val, "test": {"CIDEr": test, "BLEU-4": 15.0 + seed}})
    fake_job(tmp_path, "9", ["seed=3", "model/decoder=lstm"], None)  # unfinished: not in the mean
    rows = summarize_sweep(tmp_path)["seed_rows"]
    assert rows == [{"model/decoder": "lstm", "seeds": 3, "val CIDEr": "39.00 +- 2.00", "test CIDEr": "40.00 +- 2.00",
                     "test BLEU-4": "16.00 +- 1.00"},
                    {"model/decoder": "soft_attention", "seeds": 2, "val CIDEr": "41.00 +- 1.41",
                     "test CIDEr": "45.00 +- 1.41", "test BLEU-4": "15.50 +- 0.71"}]
    main([str(tmp_path)])
    assert "over seeds" in capsys.readouterr().out
    fake_job(tmp_path / "one", "0", ["seed=1", "model.decoder.dropout=0.1"], {"select_metric": "CIDEr", "select": 3.0})
    fake_job(tmp_path / "one", "1", ["seed=1", "model.decoder.dropout=0.2"], {"select_metric": "CIDEr", "select": 4.0})
    assert summarize_sweep(tmp_path / "one")["seed_rows"] == []  # seed not swept: no seed table
