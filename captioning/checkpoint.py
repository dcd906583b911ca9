"""Self-describing checkpoints, written atomically and read with `weights_only=True`."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch

REQUIRED_KEYS = ("model", "model_config", "vocab", "preprocess")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, or does not fit the model asking for it."""


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write to a temporary file in the same folder, flush it to disk, then rename over `path`.

    A run killed at any moment leaves either the previous file or the new one, never a torn one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(payload, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """Read a checkpoint written by this project; `mmap`: tensors stay on disk until touched (cheap peeks)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises many types for torn, truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(error).__name__}: {error})") from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(payload).__name__}")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: not a captioning checkpoint, missing {missing}")
    return payload


def checkpoint_task(path: str | Path) -> str:
    """The task a checkpoint was trained for: image_caption (also checkpoints that predate tasks), activity, video_caption."""
    return load_checkpoint(path, mmap=True).get("task", "image_caption")


def saved_config(node: dict, path: str | Path, what: str) -> dict:
    """A config read back from a checkpoint, refused if it names code outside this package.

    `instantiate` on a saved `_target_` would call whatever the file names; a checkpoint must
    never be a way to run code, so only `captioning.` targets pass.
    """
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            target = item.get("_target_")
            if target is not None and not str(target).startswith("captioning."):
                raise CheckpointError(f"{path}: its saved {what} config names {target!r}, outside this package; "
                                      f"give the {what} config on the command line instead")
            stack += list(item.values())
        elif isinstance(item, list):
            stack += item
    return node


def load_state(module: torch.nn.Module, state_dict: dict, path: str | Path, what: str = "model") -> None:
    """`load_state_dict` with an error that names the checkpoint and the first mismatches."""
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()][:4]
        raise CheckpointError(f"{path}: {what} weights do not fit this model: " + " | ".join(lines)) from error
