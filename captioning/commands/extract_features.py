"""`captioning-extract-features data=... model/encoder=... output=PATH`: cache pooled encoder features."""
import logging

import hydra
from omegaconf import DictConfig

from captioning.cli import reports_errors
from captioning.commands import CONF
from captioning.tasks import extract

log = logging.getLogger("extract_features")


@hydra.main(version_base="1.3", config_path=CONF, config_name="extract_features")
@reports_errors
def main(cfg: DictConfig) -> None:
    path = extract(cfg)
    log.info("feature store ready: %s (train with data.features=%s)", path, path)
