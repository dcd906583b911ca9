"""Compare two recipes image by image: `python scripts/compare_evaluations.py base=[DIR,...] other=[DIR,...]`.

Prints each side's score (mean over its runs), the difference with a paired bootstrap interval over the images,
and the sign-flip permutation p-value of no difference (captioning/evaluation/compare.py).
"""
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from captioning.cli import reports_errors  # noqa: E402
from captioning.options import check_options  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="compare")
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


if __name__ == "__main__":
    main()
