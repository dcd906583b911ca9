"""Score a checkpoint on a split, or a COCO results file.

    captioning-evaluate checkpoint=CKPT [data=karpathy ...] split=test [decode.beam_size=3] [output_dir=DIR]
        image or video captioners: the COCO caption metrics; activity checkpoints: top-1 accuracy + confusion.png
    captioning-evaluate results=RESULTS.json annotations=CAPTIONS.json [allow_partial=true] [output_dir=DIR]
"""
import logging

import hydra
from omegaconf import DictConfig

from captioning.cli import reports_errors
from captioning.commands import CONF
from captioning.config import check_options
from captioning.evaluation.coco import check_spice
from captioning.evaluation.report import format_table, score_results_file

log = logging.getLogger("evaluate")


@hydra.main(version_base="1.3", config_path=CONF, config_name="evaluate")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "evaluate")  # results mode too: every option typed and in range before any work
    java = None if cfg.java == "none" else cfg.java
    check_spice(cfg.spice, java)  # before anything is captioned
    if cfg.results or cfg.annotations:
        if not (cfg.results and cfg.annotations) or cfg.checkpoint:
            raise SystemExit("results mode needs both results=... and annotations=... (and no checkpoint=...)")
        report = score_results_file(cfg.results, cfg.annotations, cfg.output_dir, allow_partial=cfg.allow_partial,
                                    java=java, spice=cfg.spice, meteor=cfg.meteor, overwrite=cfg.overwrite)
    elif cfg.checkpoint:
        from captioning.tasks import evaluate  # torch and the model: results mode does without

        report = evaluate(cfg)
    else:
        raise SystemExit("give checkpoint=CKPT (caption a split) or results=... annotations=... (score a results file)")
    print(report.get("summary") or format_table(report))
    log.info("outputs (metrics.json, ...) in %s", cfg.output_dir)
