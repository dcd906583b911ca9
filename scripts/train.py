"""Train a captioner: `python scripts/train.py hydra.run.dir=DIR [overrides]`."""
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from captioning.train import train  # noqa: E402

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    metrics = train(cfg)
    log.info("final validation: %s", {k: round(v, 2) for k, v in metrics.items() if isinstance(v, float)})
    log.info("outputs in %s (checkpoints/best.pt, checkpoints/last.pt, vocab.json, metrics.json)", cfg.run_dir)
    return metrics["select"]


if __name__ == "__main__":
    main()
