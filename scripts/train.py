"""Train: `python scripts/train.py [task=...] hydra.run.dir=DIR [overrides]` (tasks: conf/task/)."""
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `captioning` importable without `pip install -e .`
from captioning import distributed  # noqa: E402
from captioning.cli import reports_errors  # noqa: E402
from captioning.plugins import require_plugins  # noqa: E402
from captioning.tasks import train  # noqa: E402

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
@reports_errors
def main(cfg: DictConfig) -> float:
    metrics = train(cfg)  # the registered task cfg.task.name (conf/task/)
    distributed.cleanup()  # leave a torchrun process group cleanly (no-op in one process)
    log.info("final validation: %s", {k: round(v, 2) for k, v in metrics.items() if isinstance(v, float)})
    log.info("outputs in %s (checkpoints/best.pt, checkpoints/last.pt, metrics.json)", cfg.run_dir)
    return metrics["select"]


if __name__ == "__main__":
    require_plugins(sys.argv[1:], Path(__file__).resolve().parents[1] / "conf")  # names the pip package to install
    main()
