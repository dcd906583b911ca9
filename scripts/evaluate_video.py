"""Evaluate a clip checkpoint: `python scripts/evaluate_video.py checkpoint=RUN/checkpoints/best.pt [split=test]`.

Activity checkpoints report top-1 accuracy and write confusion.png; description checkpoints report the caption metrics.
"""
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from captioning.video_evaluation import evaluate_clip_checkpoint  # noqa: E402

log = logging.getLogger("evaluate_video")


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate_video")
def main(cfg: DictConfig) -> None:
    print(evaluate_clip_checkpoint(cfg)["summary"])
    log.info("outputs in %s", cfg.output_dir)


if __name__ == "__main__":
    main()
