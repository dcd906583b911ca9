"""Optional Hydra plugins (the `sweeps` extra): say which one is missing before Hydra fails to compose.

Without the plugin, Hydra's own error is `Could not find 'hydra/sweeper/optuna'`; this check names the
pip package instead. It follows command-line choices through this project's config files, so
`hparams_search=optuna` or an experiment that picks `hydra/launcher=slurm` is caught too.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from omegaconf import OmegaConf

# Plugin configs (group/option as the plugins register them) -> (module that registers them, pip package).
PLUGINS = {
    "hydra/sweeper/optuna": ("hydra_plugins.hydra_optuna_sweeper", "hydra-optuna-sweeper"),
    "hydra/launcher/joblib": ("hydra_plugins.hydra_joblib_launcher", "hydra-joblib-launcher"),
    "hydra/launcher/submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
    "hydra/launcher/submitit_local": ("hydra_plugins.hydra_submitit_launcher", "hydra-submitit-launcher"),
}


class MissingPlugin(RuntimeError):
    """A config asks for a Hydra plugin that is not installed."""


def chosen_configs(overrides: list[str], conf_dir: Path) -> dict[str, str]:
    """`group/option` -> the command-line choice that led to it, through the defaults lists of our configs."""
    chosen: dict[str, str] = {}
    pending = []
    for override in overrides:
        key, sep, value = override.lstrip("+~").partition("=")
        if sep and ("/" in key or (conf_dir / key).is_dir()):
            pending += [(f"{key}/{option.strip()}", override) for option in value.split(",") if option.strip()]
    while pending:
        path, origin = pending.pop()
        if path in chosen:
            continue
        chosen[path] = origin
        file = conf_dir / f"{path}.yaml"
        if file.is_file():
            pending += [(entry, origin) for entry in _defaults(file, path.rsplit("/", 1)[0])]
    return chosen


def _defaults(file: Path, group: str) -> list[str]:
    """The `group/option` paths a config file's defaults list selects (relative entries are in `group`)."""
    entries = []
    for entry in OmegaConf.to_container(OmegaConf.load(file)).get("defaults", []) or []:
        key, option = next(iter(entry.items())) if isinstance(entry, dict) else (None, entry)
        if option in (None, "_self_"):
            continue
        if key is not None:  # `[override|optional] /group@package: option`
            option = f"{key.split()[-1].split('@')[0]}/{option}"
        name = option.split("@")[0]
        entries.append(name.lstrip("/") if name.startswith("/") else f"{group}/{name}")
    return entries


def installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # no `hydra_plugins` namespace at all
        return False


def check_plugins(overrides: list[str], conf_dir: str | Path) -> None:
    """Raise `MissingPlugin` naming the pip package when a chosen config needs an absent Hydra plugin."""
    for path, origin in chosen_configs(overrides, Path(conf_dir)).items():
        if path in PLUGINS and not installed(PLUGINS[path][0]):
            raise MissingPlugin(
                f"'{origin}' needs the Hydra plugin '{PLUGINS[path][1]}' (for {path}), which is not installed. "
                f"Install the optional sweep/launcher plugins with: pip install -e '.[sweeps]' "
                f"(from a checkout; an installed package: pip install 'captioning[sweeps]')")


def require_plugins(overrides: list[str], conf_dir: str | Path) -> None:
    """`check_plugins` for entry points: exit with the message rather than a traceback."""
    try:
        check_plugins(overrides, conf_dir)
    except MissingPlugin as error:
        raise SystemExit(f"error: {error}") from None
