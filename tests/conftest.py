"""Shared fixtures: compose the real Hydra configs, shrink them, and train once per session."""
from __future__ import annotations

import contextlib
import multiprocessing.util
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from filelock import FileLock
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FLICKR = ROOT.parent / "shared" / "data" / "flickr8k-1k"

os.environ.setdefault("TQDM_DISABLE", "1")  # keep test logs readable
# One compute thread per test process, set before torch is imported (and inherited by the scripts tests start): the
# suite runs in two pytest-xdist workers (pyproject addopts), which fill a 2-core machine, and a trained run's numbers
# are those of one thread on any machine, so the quality lines of the trained fixtures hold everywhere.
for _threads in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_threads, "1")

# The fast tier (`pytest -m "not slow"`, docs/testing.md) leaves out every test that trains beyond a few steps, starts
# a process (a script, the JVM, a browser) or runs Hypothesis at its full count. Tests that use a trained run below,
# or compose every shipped config, are marked here; a test that starts a process without the mark fails, so the tier
# cannot drift.
TRAINED_RUNS = {"tiny_run", "learned_run", "attention_run"}
EVERY_CONFIG = {"every_config"}  # tests/test_configs.py, test_options.py: all ~100 shipped compositions, 10 s


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if (TRAINED_RUNS | EVERY_CONFIG) & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


PROVENANCE_TOOLS = {"git", "uname"}


class StartsAProcess(AssertionError):
    pass


@contextlib.contextmanager
def processes_refused(item: pytest.Item) -> Iterator[None]:
    """Unless `item` is marked slow, starting a program fails, naming it: subprocess starts every program through
    `Popen._execute_child`, multiprocessing's spawn through `spawnv_passfds`. git and uname are let through: every
    training run records its commit and platform (captioning/provenance.py), in milliseconds."""
    if item.get_closest_marker("slow") is not None:
        yield
        return
    start_child, spawn = subprocess.Popen._execute_child, multiprocessing.util.spawnv_passfds

    def refuse(program):
        raise StartsAProcess(f"{item.nodeid} starts {program!r}: mark it @pytest.mark.slow")

    def execute_child(popen, args, *rest):
        if not (isinstance(args, (list, tuple)) and args and Path(str(args[0])).name in PROVENANCE_TOOLS):
            refuse(args)
        return start_child(popen, args, *rest)

    subprocess.Popen._execute_child = execute_child
    multiprocessing.util.spawnv_passfds = lambda path, args, fds: refuse(args)
    try:
        yield
    finally:
        subprocess.Popen._execute_child, multiprocessing.util.spawnv_passfds = start_child, spawn


# Setup covers the fixtures of every scope that a test brings up first, so a module's fixture is held to its test's mark.
@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item):
    with processes_refused(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item):
    with processes_refused(item):
        return (yield)


def compose_train(overrides: list[str], run_dir: str | Path | None = None) -> DictConfig:
    """The `conf/train.yaml` config with overrides, as `scripts/train.py` would see it."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir) if run_dir is not None else None
    return cfg


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """One synthetic-data cache for the whole session, shared by its pytest-xdist workers: a trained run read by one
    worker may have been trained by the other, and its tests read the same images. Generation is safe to race (each
    data set is written in a temporary folder and renamed; the first to finish wins)."""
    root = session_folder(tmp_path_factory) / "synthetic-cache"
    root.mkdir(exist_ok=True)
    return root


def session_folder(tmp_path_factory) -> Path:
    """The temporary folder of this test session that its pytest-xdist workers share (each worker's own basetemp sits
    in it); without workers, the session's basetemp."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


def tiny_overrides(synthetic_root: Path) -> list[str]:
    """A few seconds of training: small synthetic set, small decoder, small CNN."""
    return [f"data.source.root={synthetic_root}", "data.source.num_train=120", "data.source.num_val=24",
            "data.source.num_test=24", "model.decoder.embed_size=32", "model.decoder.hidden_size=32",
            "model.encoder.width=8", "model.encoder.out_dim=32", "train.batch_size=16", "train.epochs=2",
            "vocab.min_count=1"]


def trained_once(tmp_path_factory, name: str, train_into) -> Path:
    """A run folder that `train_into(folder)` fills once per test session. The pytest-xdist workers of a session share
    its folder: the first to ask trains under a file lock, the others wait for it and read the same run."""
    shared = session_folder(tmp_path_factory)
    run_dir, done = shared / name, shared / f"{name}.done"
    with FileLock(shared / f"{name}.lock"):
        if not done.is_file():
            shutil.rmtree(run_dir, ignore_errors=True)  # a worker that failed half-way
            run_dir.mkdir()
            train_into(run_dir)
            done.touch()
    return run_dir


@pytest.fixture(scope="session", autouse=True)
def trained_first(request) -> None:
    """Under pytest-xdist, worker gw0 trains learned_run and gw1 attention_run before their first tests, when any
    selected test uses them: the two big runs train at once, instead of one worker later waiting for the other's."""
    wanted = {"gw0": "learned_run", "gw1": "attention_run"}.get(os.environ.get("PYTEST_XDIST_WORKER", ""))
    if wanted and any(wanted in getattr(item, "fixturenames", ()) for item in request.session.items):
        request.getfixturevalue(wanted)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synthetic_root) -> Path:
    """A run folder from a tiny 2-epoch training (mechanics, not quality)."""
    from captioning.tasks import train

    return trained_once(tmp_path_factory, "tiny-run", lambda run_dir: train(compose_train(
        tiny_overrides(synthetic_root), run_dir)))


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory, synthetic_root) -> Path:
    """The default built-in experiment, shortened to 4 epochs: a captioner that really works."""
    from captioning.tasks import train

    return trained_once(tmp_path_factory, "learned-run", lambda run_dir: train(compose_train(
        [f"data.source.root={synthetic_root}", "train.epochs=4"], run_dir)))


@pytest.fixture(scope="session")
def attention_run(tmp_path_factory, synthetic_root):
    """Soft attention over the tiny CNN's 8 x 8 grid (3 blocks: each cell sees 15 pixels), trained end to end on
    1,200 of the built-in shapes: localisation 4.6 / 5.5 for colour / shape words (seed 1: 4.2 / 4.9) against the
    test's 3; all 3,000 gave 6.5 / 8.4 in 2.5x the time. Without the doubly stochastic penalty: asking each of 64
    cells for a total weight of 1 over a caption of about 10 words spreads every word's attention
    (docs/attention.md#on-the-built-in-shapes)."""
    from captioning.tasks import train

    return trained_once(tmp_path_factory, "attention-run", lambda run_dir: train(compose_train(
        [f"data.source.root={synthetic_root}", "data.source.num_train=1200", "model/decoder=soft_attention",
         "model.encoder.blocks=3", "model.decoder.doubly_stochastic=0.0", "train.epochs=4", "train.show_examples=0"],
        run_dir)))
