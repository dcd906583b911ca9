"""`captioning-pack-region-features input=data/cocobu_att output=features/cocobu [pooled=data/cocobu_fc]`:
precomputed region features (bottom-up attention) packed into a feature store."""
import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from captioning.cli import reports_errors
from captioning.commands import CONF
from captioning.config import check_options

log = logging.getLogger("pack_region_features")


@hydra.main(version_base="1.3", config_path=CONF, config_name="pack_region_features")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "pack_regions")
    from captioning.data.regions import caption_ids, pack_region_features

    path = pack_region_features(Path(cfg.input), Path(cfg.output), ids=caption_ids(cfg.data),
                                pooled_dir=Path(cfg.pooled) if cfg.pooled else None,
                                boxes_dir=Path(cfg.boxes) if cfg.boxes else None, dtype=cfg.dtype,
                                overwrite=cfg.overwrite)
    log.info("region store ready: %s", path)
