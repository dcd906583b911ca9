"""`captioning-export checkpoint=RUN/checkpoints/best.pt output=DIR`: the checkpoint as ONNX graphs.

Then caption without torch: `python -m captioning.export.runtime DIR photo.jpg` (onnxruntime and NumPy).
"""
import logging

import hydra
from omegaconf import DictConfig

from captioning.cli import reports_errors
from captioning.commands import CONF
from captioning.config import check_options

log = logging.getLogger("export")


@hydra.main(version_base="1.3", config_path=CONF, config_name="export")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "export")
    from captioning.export.onnx_export import export_onnx

    folder = export_onnx(cfg.checkpoint, cfg.output, opset=cfg.opset, overwrite=cfg.overwrite)
    log.info("exported to %s; caption with: python -m captioning.export.runtime %s IMAGE", folder, folder)
