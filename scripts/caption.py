"""Caption images: `python scripts/caption.py checkpoint=RUN/checkpoints/best.pt images=DIR [decode.beam_size=5]`.

With a video description checkpoint (task=video_caption), `images` names clips: video files or frame folders.
"""
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from captioning.cli import reports_errors  # noqa: E402
from captioning.tasks import caption  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="caption")
@reports_errors
def main(cfg: DictConfig) -> None:
    if not caption(cfg):
        sys.exit("nothing could be captioned")


if __name__ == "__main__":
    main()
