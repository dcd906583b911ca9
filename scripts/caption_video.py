"""Caption clips: `python scripts/caption_video.py checkpoint=RUN/checkpoints/best.pt images=CLIPS [decode.beam_size=5]`.

`images` names clips here: a video file, a frame folder, a folder of clips, a glob, or a list.
Same options as scripts/caption.py (conf/caption.yaml).
"""
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from captioning.video_inference import caption_clips  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="caption")
def main(cfg: DictConfig) -> None:
    if not caption_clips(cfg):
        sys.exit("no clip could be captioned")


if __name__ == "__main__":
    main()
