"""`captioning-compare base=[DIR,...] other=[DIR,...]`: two recipes compared image by image.

Prints each side's score (mean over its runs), the difference with a paired bootstrap interval over the images,
and the sign-flip permutation p-value of no difference (captioning/evaluation/compare.py).
"""
import hydra
from omegaconf import DictConfig

from captioning.cli import reports_errors
from captioning.commands import CONF
from captioning.config import check_options


@hydra.main(version_base="1.3", config_path=CONF, config_name="compare")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "compare")
    from captioning.evaluation.compare import compare_evaluations, format_comparison, write_comparison

    folders = {side: [cfg[side]] if isinstance(cfg[side], str) else list(cfg[side]) for side in ("base", "other")}
    result = compare_evaluations(folders["base"], folders["other"], metric=cfg.metric, samples=cfg.samples,
                                 seed=cfg.seed, confidence=cfg.confidence)
    print(format_comparison(result))
    if cfg.output:
        write_comparison(result, cfg.output)
