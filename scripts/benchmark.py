"""Training and feature-extraction throughput table: `python scripts/benchmark.py [bench=cuda] [output=FILE.json]`."""

import hydra
from omegaconf import DictConfig

from benchmarks.training_throughput import run
from captioning.cli import reports_errors
from captioning.commands import CONF
from captioning.config import check_options


@hydra.main(version_base="1.3", config_path=CONF, config_name="benchmark")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "benchmark")  # every option typed and in range before any work
    run(cfg)


if __name__ == "__main__":
    main()
