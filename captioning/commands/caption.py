"""`captioning-caption checkpoint=RUN/checkpoints/best.pt images=DIR [decode.beam_size=5]`.

With a video description checkpoint (task=video_caption), `images` names clips: video files or frame folders.
"""
import sys

import hydra
from omegaconf import DictConfig

from captioning.cli import reports_errors
from captioning.commands import CONF
from captioning.tasks import caption


@hydra.main(version_base="1.3", config_path=CONF, config_name="caption")
@reports_errors
def main(cfg: DictConfig) -> None:
    if not caption(cfg):
        sys.exit("nothing could be captioned")
