"""scheduler=noam: the warmup / inverse-square-root curve at given steps, its state through a weights-only checkpoint,
a resumed run on the same curve as an uninterrupted one, and a bad warmup refused by key."""
from __future__ import annotations

import io
import json
import math

import pytest
import torch
from hydra.utils import instantiate

from captioning.config import OptionError, check_options
from captioning.tasks import train
from captioning.training.schedules import NoamFactor
from tests.conftest import compose_train, tiny_overrides


def rates(cfg, steps: int) -> list[float]:
    """The learning rate of each of `steps` optimiser steps under the configured optimiser and scheduler."""
    optimizer = instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(1))])
    scheduler = instantiate(cfg.scheduler.build)(optimizer)
    seen = []
    for _ in range(steps):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return seen


def test_the_curve_at_given_steps():
    cfg = compose_train(["scheduler=noam", "scheduler.build.warmup=4", "optim.lr=0.01"])
    assert cfg.scheduler.interval == "step"
    lr = rates(cfg, 16)
    expected = {0: 0.0025, 1: 0.005, 2: 0.0075, 3: 0.01,     # linear warmup to optim.lr at step warmup - 1
                4: 0.01 * math.sqrt(4 / 5), 8: 0.01 * math.sqrt(4 / 9), 15: 0.005}  # then 1/sqrt: half at 4 x warmup - 1
    for step, value in expected.items():
        assert lr[step] == pytest.approx(value, rel=1e-12), step
    assert max(lr) == pytest.approx(0.01) and lr.index(max(lr)) == 3


def test_its_state_is_plain_data_that_restores_the_curve():
    """LambdaLR keeps NoamFactor's attributes in its state dict: loadable with weights_only=True, and a scheduler
    loaded from it continues where the saved one was."""
    cfg = compose_train(["scheduler=noam", "scheduler.build.warmup=3", "optim.lr=0.1"])
    straight = rates(cfg, 10)
    optimizer = instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(1))])
    scheduler = instantiate(cfg.scheduler.build)(optimizer)
    for _ in range(6):
        optimizer.step()
        scheduler.step()
    buffer = io.BytesIO()
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert saved["scheduler"]["lr_lambdas"] == [{"warmup": 3}]
    fresh = instantiate(cfg.optim)([torch.nn.Parameter(torch.zeros(1))])
    resumed = instantiate(cfg.scheduler.build)(fresh)
    fresh.load_state_dict(saved["optimizer"])
    resumed.load_state_dict(saved["scheduler"])
    continued = []
    for _ in range(4):
        continued.append(fresh.param_groups[0]["lr"])
        fresh.step()
        resumed.step()
    assert continued == straight[6:]


@pytest.mark.parametrize("warmup", [0, -3, 1.5, "'10'"])
def test_a_bad_warmup_is_refused_by_key(warmup):
    cfg = compose_train(["scheduler=noam", f"scheduler.build.warmup={warmup}"], "run")
    with pytest.raises(OptionError, match=r"^scheduler\.build\.warmup=.*: expected an integer >= 1$"):
        check_options(cfg, "train")
    with pytest.raises(ValueError, match="scheduler.build.warmup"):
        NoamFactor(warmup if not isinstance(warmup, str) else "10")


@pytest.mark.slow
def test_a_resumed_run_continues_the_same_learning_rates(tmp_path, synthetic_root):
    """Stop mid-epoch and resume from last.pt: every later step's lr (steps.jsonl) equals the uninterrupted run's,
    which follows the formula."""
    base = tiny_overrides(synthetic_root) + ["scheduler=noam", "scheduler.build.warmup=4", "optim.lr=0.002",
                                             "train.epochs=5", "train.show_examples=0"]
    train(compose_train(base + ["train.max_steps=12"], tmp_path / "straight"))
    train(compose_train(base + ["train.max_steps=5"], tmp_path / "stopped"))
    train(compose_train(base + ["train.max_steps=12", f"train.resume={tmp_path / 'stopped/checkpoints/last.pt'}"],
                        tmp_path / "resumed"))

    def logged(run: str) -> dict[int, float]:
        lines = (tmp_path / run / "steps.jsonl").read_text().splitlines()
        return {row["step"]: row["lr"] for row in map(json.loads, lines)}

    straight, resumed = logged("straight"), logged("resumed")
    assert sorted(resumed) == list(range(6, 13))
    for step, lr in resumed.items():
        assert lr == straight[step], step
        assert lr == pytest.approx(0.002 * min((step + 1) / 4, math.sqrt(4 / (step + 1)))), step
