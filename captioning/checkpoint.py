"""Self-describing checkpoints, written atomically and read with `weights_only=True`.

A checkpoint names what it holds only by registered names and plain data: `task` (a task registry
name), `model_spec` ({part: {"name", ...arguments}}, see models/caption_model.py), `vocab` or `classes`,
`preprocess`, `data` (the data source spec, `{"name": ..., ...}`), `config_yaml` (the run's config as
text, for people: never instantiated), plus the state dicts and training progress. `load_checkpoint`
refuses any `_target_` or non-plain value outside the state dicts before a caller builds anything.
Checkpoints written before format 2 stored Hydra `_target_`s and are refused (retrain to get a format 2 file).
"""
from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

import torch

from captioning.registry import find_code_reference

FORMAT = 2
REQUIRED_KEYS = ("format", "task", "model", "model_spec", "preprocess")
STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng")  # tensors and library state, never instantiated
RESUME_KEYS = ("optimizer", "rng", "epoch", "batch_in_epoch", "step")  # what train.resume needs besides the weights


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt, foreign, or does not fit the model or run asking for it."""


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write to a temporary file in the same folder, flush it to disk, then rename over `path`.

    A run killed at any moment leaves either the previous file or the new one, never a torn one (and at most
    a `*.tmp` file, removed at the next start: training/run_log.py). A full disk is reported first, with the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(handle, "wb") as file:
            torch.save({"format": FORMAT, **payload}, file)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o666 & ~current_umask())  # mkstemp makes 0600; give it the permissions of other outputs
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
        reason = disk_full(error)
        if reason:
            raise CheckpointError(f"{reason} while writing {path}: the checkpoint was not saved and any previous "
                                  f"{path.name} is unchanged; free space (or write elsewhere) and resume") from error
        raise
    return path


def current_umask() -> int:
    """The process umask, read without changing it where Linux shows it (other threads may be creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def disk_full(error: BaseException) -> str | None:
    """"No space left on device" (or a full quota) when that is what `error` or one it was raised from reports.

    torch.save buries the OSError under `RuntimeError: [enforce fail at inline_container.cc...]`."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return os.strerror(error.errno)
        for code in (errno.ENOSPC, errno.EDQUOT):
            if os.strerror(code) in str(error):
                return os.strerror(code)
        error = error.__cause__ or error.__context__
    return None


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu", mmap: bool = False,
                    expect_task: str | tuple[str, ...] | None = None) -> dict:
    """Read a checkpoint written by this project and refuse one that names code or is not for `expect_task`.

    `mmap`: tensors stay on disk until touched (cheap peeks).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: " + ("a folder, not a checkpoint file" if path.is_dir() else "checkpoint not found"))
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: an empty file (0 bytes), not a checkpoint")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as error:  # torch raises many types for torn, truncated or foreign files
        raise CheckpointError(f"{path}: not a readable checkpoint ({load_failure(error)})") from error
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, found {type(payload).__name__}")
    if "format" not in payload and "model_config" in payload:
        raise CheckpointError(f"{path}: written by an older version of this project (format 1, whose model_config "
                              "names code through Hydra _target_); such files are no longer loaded: retrain it")
    missing = [key for key in REQUIRED_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: not a captioning checkpoint, missing {missing}")
    if payload["format"] != FORMAT:
        raise CheckpointError(f"{path}: checkpoint format {payload['format']!r}; this version reads format {FORMAT}")
    for key, value in payload.items():
        if key not in STATE_KEYS:
            problem = find_code_reference(value, key)
            if problem:
                raise CheckpointError(f"{path}: {problem}")
    if expect_task is not None:
        wanted = (expect_task,) if isinstance(expect_task, str) else tuple(expect_task)
        if payload["task"] not in wanted:
            raise CheckpointError(f"{path}: a {payload['task']!r} checkpoint; this needs {' or '.join(map(repr, wanted))}")
    return payload


# What torch's refusal of pickled objects names: the object, never its advice to load the file unsafely.
PICKLED_OBJECT = re.compile(r"(?:Unsupported global: |unsupported )(GLOBAL [\w.]+)|(Unsupported operand \d+)|"
                            r"(Unsupported class [\w.]+)")


def load_failure(error: BaseException) -> str:
    """Why `torch.load(weights_only=True)` failed, in a few words.

    PyTorch's message tells the reader to re-run with `weights_only=False`, which runs whatever code the file names;
    a file that holds pickled Python objects is refused without passing that advice on."""
    text = str(error)
    if "weights_only" not in text and "WeightsUnpickler" not in text:
        return f"{type(error).__name__}: {text}"
    found = PICKLED_OBJECT.search(text)
    named = next((group for group in found.groups() if group), "") if found else ""
    return ("it holds pickled Python objects" + (f" ({named})" if named else "") +
            ", which are never loaded: only tensors and plain data are read")


def check_finite(state_dict: dict, path: str | Path, what: str = "model") -> None:
    """Refuse weights holding NaN or Inf (a run that diverged), naming the first such tensors."""
    bad = [name for name, value in state_dict.items()
           if torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all())]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        part = "" if what == "model" else f"the {what}'s "  # a part's state dict names tensors inside the part
        raise CheckpointError(f"{path}: non-finite weights (NaN or Inf) in {part}{', '.join(bad[:3])}{more}; "
                              "the run that wrote it diverged: use an earlier checkpoint")


def check_resumable(payload: dict, path: str | Path) -> None:
    """`train.resume` needs training progress (optimizer, RNG, position) and finite weights."""
    missing = [key for key in RESUME_KEYS if key not in payload]
    if missing:
        raise CheckpointError(f"{path}: cannot resume from it, it has no {missing} (a weights-only file? "
                              "use train.init_from to start a new run from its weights)")
    check_finite(payload["model"], path)


def load_state(module: torch.nn.Module, state_dict: dict, path: str | Path, what: str = "model") -> None:
    """`load_state_dict` with an error that names the checkpoint and the first mismatches or non-finite tensors."""
    check_finite(state_dict, path, what)
    try:
        module.load_state_dict(state_dict)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()][:4]
        raise CheckpointError(f"{path}: {what} weights do not fit this model: " + " | ".join(lines)) from error
