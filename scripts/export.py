"""Export a checkpoint to ONNX: `python scripts/export.py checkpoint=RUN/checkpoints/best.pt output=DIR`.

Then caption without torch: `python -m captioning.export.runtime DIR photo.jpg` (onnxruntime and NumPy).
"""
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from captioning.cli import reports_errors  # noqa: E402
from captioning.options import check_options  # noqa: E402

log = logging.getLogger("export")


@hydra.main(version_base="1.3", config_path="../conf", config_name="export")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "export")
    from captioning.export.onnx_export import export_onnx

    folder = export_onnx(cfg.checkpoint, cfg.output, opset=cfg.opset, overwrite=cfg.overwrite)
    log.info("exported to %s; caption with: python -m captioning.export.runtime %s IMAGE", folder, folder)


if __name__ == "__main__":
    main()
