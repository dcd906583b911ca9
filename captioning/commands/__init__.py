"""The console scripts (`captioning-train`, ...; pyproject.toml), also run by the files in scripts/. One module per
command, named as its script: Hydra names the job, and its log file (`train.log`), after the module."""
from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def config_dir() -> str:
    """The Hydra configs: captioning/conf in an installed wheel (setup.py ships conf/ there), else the checkout's
    conf/ beside the package (a source tree, or an editable install)."""
    for folder in (PACKAGE / "conf", PACKAGE.parent / "conf"):
        if (folder / "train.yaml").is_file():
            return str(folder)
    raise FileNotFoundError(f"no Hydra configs (conf/train.yaml) in {PACKAGE / 'conf'} or {PACKAGE.parent / 'conf'}")


CONF = config_dir()  # absolute: Hydra takes it as it is, whichever file calls `main`
