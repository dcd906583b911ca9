"""`captioning-folds folds=[DIR,...] output_dir=DIR`: five fold evaluations of one recipe as one score.

Scores the union of the five folds' test captions again as one evaluation (BLEU-1..4, METEOR, ROUGE-L, CIDEr), prints
it beside each fold's scores and their spread, and writes metrics.json and per_image.csv for captioning-compare
(captioning/evaluation/folds.py).
"""
import hydra
from omegaconf import DictConfig

from captioning.cli import reports_errors
from captioning.commands import CONF
from captioning.config import check_options


@hydra.main(version_base="1.3", config_path=CONF, config_name="folds")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "folds")
    from captioning.evaluation.coco import check_spice
    from captioning.evaluation.folds import format_folds, pool_folds

    check_spice(cfg.spice, None if cfg.java == "none" else cfg.java)

    folders = [cfg.folds] if isinstance(cfg.folds, str) else list(cfg.folds)
    report = pool_folds(folders, cfg.output_dir, java=None if cfg.java == "none" else cfg.java,
                        spice=cfg.spice, meteor=cfg.meteor, overwrite=cfg.overwrite)
    print(format_folds(report))
