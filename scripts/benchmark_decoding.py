"""Decoding throughput table: `python scripts/benchmark_decoding.py checkpoint=RUN/checkpoints/best.pt [device=cuda]`."""
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.decoding_throughput import benchmark  # noqa: E402
from captioning.cli import reports_errors  # noqa: E402
from captioning.options import check_options  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="benchmark_decoding")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "benchmark_decoding")  # every option typed and in range before any work
    benchmark(cfg)


if __name__ == "__main__":
    main()
