"""Training and feature-extraction throughput table: `python scripts/benchmark.py [bench=cuda] [output=FILE.json]`."""
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.training_throughput import run  # noqa: E402
from captioning.cli import reports_errors  # noqa: E402
from captioning.options import check_options  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "benchmark")  # every option typed and in range before any work
    run(cfg)


if __name__ == "__main__":
    main()
