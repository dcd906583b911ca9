"""Reproducibility: what a run records about its origin, and rerunning a saved config gives the same run.

(The command-line rerun of a sweep job's `.hydra/config.yaml` is tested in test_sweeps.py.)
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir

from captioning.checkpoint import load_checkpoint
from captioning.provenance import git_state, provenance, write_provenance
from captioning.tasks import train
from tests.conftest import ROOT, compose_train, tiny_overrides


def losses(run_dir) -> list[float]:
    return [json.loads(line)["loss"] for line in (run_dir / "steps.jsonl").read_text().splitlines()]


def git(cwd, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


def test_provenance_names_commit_packages_seed_and_command():
    record = provenance(seed=7)
    assert record["seed"] == 7
    assert torch.__version__.startswith(record["packages"]["torch"])  # metadata drops a local '+cu130' tag
    assert record["packages"]["python"] == ".".join(map(str, sys.version_info[:3]))
    assert {"torchvision", "timm", "hydra-core", "nltk", "pycocotools", "numpy"} <= set(record["packages"])
    assert record["command"][1:] == sys.argv and record["hostname"] and record["time"]
    if (ROOT / ".git").exists():
        assert record["git"]["commit"] == git(ROOT, "rev-parse", "HEAD")
        assert isinstance(record["git"]["dirty"], bool)


def test_dirty_checkout_saves_its_diff(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "model.py").write_text("hidden = 512\n")
    git(repo, "add", "model.py")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "start")
    clean = git_state(repo)
    assert clean["commit"] == git(repo, "rev-parse", "HEAD") and clean["dirty"] is False

    (repo / "model.py").write_text("hidden = 256\n")
    (repo / "new_module.py").write_text("x = 1\n")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    record = json.loads(write_provenance(run_dir, seed=3, root=repo).read_text())
    assert record["git"] == {"commit": clean["commit"], "dirty": True, "untracked": ["new_module.py"]}
    patch = (run_dir / "git_diff.patch").read_text()
    assert "-hidden = 512" in patch and "+hidden = 256" in patch
    # the patch restores the run's code on top of its commit
    git(repo, "stash", "-q")
    git(repo, "apply", str(run_dir / "git_diff.patch"))
    assert (repo / "model.py").read_text() == "hidden = 256\n"

    outside = git_state(tmp_path / "not-a-repo")
    assert outside == {"commit": None, "dirty": None, "diff": None, "untracked": None}


def test_rerunning_saved_config_yaml_reproduces_the_run(tiny_run, tmp_path):
    """Compose the run's own resolved config.yaml (new run_dir only) and train again: identical losses and metrics."""
    with initialize_config_dir(version_base="1.3", config_dir=str(tiny_run)):
        cfg = compose("config", overrides=[f"run_dir={tmp_path}"])
    train(cfg)
    assert losses(tmp_path) == losses(tiny_run)
    assert json.loads((tmp_path / "metrics.json").read_text()) == json.loads((tiny_run / "metrics.json").read_text())


def test_training_run_records_its_provenance(tiny_run):
    record = json.loads((tiny_run / "provenance.json").read_text())
    assert record["seed"] == 0 and record["packages"]["torch"]


def show_and_tell_tiny(synthetic_root, stage: str) -> list[str]:
    """The Show and Tell experiment on the built-in shapes with a tiny CNN (no Inception download)."""
    return [f"experiment={stage}", "data=synthetic", "model/encoder=tiny_cnn", *tiny_overrides(synthetic_root),
            "train.max_steps=4", "train.show_examples=0"]


@pytest.fixture(scope="module")
def show_and_tell_stage1(tmp_path_factory, synthetic_root):
    run_dir = tmp_path_factory.mktemp("show-and-tell-stage1")
    train(compose_train(show_and_tell_tiny(synthetic_root, "show_and_tell_coco"), run_dir))
    return run_dir


def test_show_and_tell_stage1_trains_with_its_recipe(show_and_tell_stage1):
    steps = [json.loads(line) for line in (show_and_tell_stage1 / "steps.jsonl").read_text().splitlines()]
    assert [row["lr"] for row in steps] == [2.0] * 4  # SGD at 2.0, halved only after 8 epochs
    checkpoint = load_checkpoint(show_and_tell_stage1 / "checkpoints" / "last.pt")
    assert checkpoint["model_spec"]["decoder"]["image_input"] == "first_step"
    assert all(torch.isfinite(value).all() for value in checkpoint["model"].values())


@pytest.mark.slow
def test_show_and_tell_stage2_starts_from_stage1_weights(show_and_tell_stage1, synthetic_root, tmp_path):
    stage1 = load_checkpoint(show_and_tell_stage1 / "checkpoints" / "last.pt")
    overrides = show_and_tell_tiny(synthetic_root, "show_and_tell_coco_finetune") + [
        f"stage1={show_and_tell_stage1 / 'checkpoints' / 'last.pt'}", "train.max_steps=1",
        "optim.lr=1e-12", "train.encoder_lr=1e-12", "vocab.min_count=50"]  # a different vocabulary if it were rebuilt
    train(compose_train(overrides, tmp_path))
    stage2 = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert stage2["vocab"] == stage1["vocab"] and stage2["step"] == 1
    weights = [name for name in stage1["model"] if "running_" not in name and "num_batches" not in name]  # BN stats move
    for name in weights:
        torch.testing.assert_close(stage2["model"][name], stage1["model"][name], atol=1e-6, rtol=0, msg=name)
