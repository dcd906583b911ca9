"""The demo page: `python scripts/demo.py [checkpoint=RUN/checkpoints/best.pt] [port=7860]`, then open
http://127.0.0.1:7860. Without arguments it serves the quick start's checkpoint (runs/quickstart)."""
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from captioning.cli import reports_errors  # noqa: E402
from captioning.options import check_options  # noqa: E402
from captioning.registry import plain  # noqa: E402


@hydra.main(version_base="1.3", config_path="../conf", config_name="demo")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "demo")
    from captioning.inference.demo import serve

    serve(plain(cfg.checkpoint), host=cfg.host, port=cfg.port, device=cfg.device, examples=plain(cfg.examples),
          max_upload_mb=cfg.max_upload_mb, max_image_pixels=cfg.max_image_pixels)


if __name__ == "__main__":
    main()
