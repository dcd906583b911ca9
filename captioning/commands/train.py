"""`captioning-train [task=...] hydra.run.dir=DIR [overrides]` (tasks: conf/task/)."""
import logging
import sys

import hydra
from omegaconf import DictConfig

from captioning import distributed
from captioning.cli import reports_errors
from captioning.commands import CONF
from captioning.plugins import require_plugins
from captioning.tasks import train

log = logging.getLogger("train")


@hydra.main(version_base="1.3", config_path=CONF, config_name="train")
@reports_errors
def run(cfg: DictConfig) -> float:
    metrics = train(cfg)  # the registered task cfg.task.name (conf/task/)
    distributed.cleanup()  # leave a torchrun process group cleanly (no-op in one process)
    log.info("final validation: %s", {k: round(v, 2) for k, v in metrics.items() if isinstance(v, float)})
    log.info("outputs in %s (checkpoints/best.pt, checkpoints/last.pt, metrics.json)", cfg.run_dir)
    return metrics["select"]  # what a sweeper (hparams_search=optuna) optimises


def main() -> None:
    require_plugins(sys.argv[1:], CONF)  # names the pip package to install
    run()
