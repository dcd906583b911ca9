"""Pack precomputed region features (bottom-up attention) into a feature store:
`python scripts/pack_region_features.py input=data/cocobu_att output=features/cocobu [pooled=data/cocobu_fc]`."""
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from captioning.cli import reports_errors  # noqa: E402
from captioning.options import check_options  # noqa: E402

log = logging.getLogger("pack_region_features")


@hydra.main(version_base="1.3", config_path="../conf", config_name="pack_region_features")
@reports_errors
def main(cfg: DictConfig) -> None:
    check_options(cfg, "pack_regions")
    from captioning.data.regions import caption_ids, pack_region_features

    path = pack_region_features(Path(cfg.input), Path(cfg.output), ids=caption_ids(cfg.data),
                                pooled_dir=Path(cfg.pooled) if cfg.pooled else None,
                                boxes_dir=Path(cfg.boxes) if cfg.boxes else None, dtype=cfg.dtype,
                                overwrite=cfg.overwrite)
    log.info("region store ready: %s", path)


if __name__ == "__main__":
    main()
