"""Cache pooled encoder features: `python scripts/extract_features.py data=... model/encoder=... output=PATH`."""
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from captioning.cli import reports_errors  # noqa: E402
from captioning.tasks import extract  # noqa: E402

log = logging.getLogger("extract_features")


@hydra.main(version_base="1.3", config_path="../conf", config_name="extract_features")
@reports_errors
def main(cfg: DictConfig) -> None:
    path = extract(cfg)
    log.info("feature store ready: %s (train with data.features=%s)", path, path)


if __name__ == "__main__":
    main()
