"""Shared fixtures: compose the real Hydra configs, shrink them, and train once per session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, open_dict

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
FLICKR = ROOT.parent / "shared" / "data" / "flickr8k-1k"

os.environ.setdefault("TQDM_DISABLE", "1")  # keep test logs readable


def compose_train(overrides: list[str], run_dir: str | Path | None = None) -> DictConfig:
    """The `conf/train.yaml` config with overrides, as `scripts/train.py` would see it."""
    with initialize_config_dir(version_base="1.3", config_dir=str(CONF)):
        cfg = compose("train", overrides=overrides)
    with open_dict(cfg):
        cfg.run_dir = str(run_dir) if run_dir is not None else None
    return cfg


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """One synthetic-data cache for the whole session."""
    return tmp_path_factory.mktemp("synthetic-cache")


def tiny_overrides(synthetic_root: Path) -> list[str]:
    """A few seconds of training: small synthetic set, small decoder, small CNN."""
    return [f"data.source.root={synthetic_root}", "data.source.num_train=120", "data.source.num_val=24",
            "data.source.num_test=24", "model.decoder.embed_size=32", "model.decoder.hidden_size=32",
            "model.encoder.width=8", "model.encoder.out_dim=32", "train.batch_size=16", "train.epochs=2",
            "vocab.min_count=1"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synthetic_root) -> Path:
    """A run folder from a tiny 2-epoch training (mechanics, not quality)."""
    from captioning.tasks import train

    run_dir = tmp_path_factory.mktemp("tiny-run")
    train(compose_train(tiny_overrides(synthetic_root), run_dir))
    return run_dir


@pytest.fixture(scope="session")
def learned_run(tmp_path_factory, synthetic_root) -> Path:
    """The default built-in experiment, shortened to 4 epochs: a captioner that really works."""
    from captioning.tasks import train

    run_dir = tmp_path_factory.mktemp("learned-run")
    train(compose_train([f"data.source.root={synthetic_root}", "train.epochs=4"], run_dir))
    return run_dir


@pytest.fixture(scope="session")
def attention_run(tmp_path_factory, synthetic_root):
    """Soft attention over the tiny CNN's 8 x 8 grid (3 blocks: each cell sees 15 pixels), trained end to end on
    the built-in shapes. Without the doubly stochastic penalty: asking each of 64 cells for a total weight of 1
    over a caption of about 10 words spreads every word's attention (docs/attention.md#on-the-built-in-shapes)."""
    from captioning.tasks import train

    run_dir = tmp_path_factory.mktemp("attention-run")
    train(compose_train([f"data.source.root={synthetic_root}", "model/decoder=soft_attention", "model.encoder.blocks=3",
                         "model.decoder.doubly_stochastic=0.0", "train.epochs=4", "train.show_examples=0"], run_dir))
    return run_dir
