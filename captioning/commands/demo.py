"""`captioning-demo [checkpoint=RUN/checkpoints/best.pt] [port=7860]`, then open http://127.0.0.1:7860.
Without arguments it serves the quick start's checkpoint (runs/quickstart)."""
import hydra
from omegaconf import DictConfig

from captioning.cli import reports_errors
from captioning.commands import CONF
from captioning.config import check_options
from captioning.registry import plain


@hydra.main(version_base="1.3", config_path=CONF, config_name="demo")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "demo")
    from captioning.inference.demo import serve

    serve(plain(cfg.checkpoint), host=cfg.host, port=cfg.port, device=cfg.device, examples=plain(cfg.examples),
          max_upload_mb=cfg.max_upload_mb, max_image_pixels=cfg.max_image_pixels, allow_hub_model=cfg.allow_hub_model)
