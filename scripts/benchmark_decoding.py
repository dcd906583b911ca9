"""Decoding throughput table: `python scripts/benchmark_decoding.py checkpoint=RUN/checkpoints/best.pt [device=cuda]`."""

import hydra
from omegaconf import DictConfig

from benchmarks.decoding_throughput import benchmark
from captioning.cli import reports_errors
from captioning.commands import CONF
from captioning.config import check_options


@hydra.main(version_base="1.3", config_path=CONF, config_name="benchmark_decoding")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "benchmark_decoding")  # every option typed and in range before any work
    benchmark(cfg)


if __name__ == "__main__":
    main()
