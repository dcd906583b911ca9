"""What a training run writes: step and validation logs, TensorBoard, checkpoints, metrics (rank 0 only); and the
claim on its run folder: one training process at a time (`.lock`), never over another run's files by accident."""
from __future__ import annotations

import atexit
import json
import logging
import os
import shutil
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from torch.utils.tensorboard import SummaryWriter

from captioning import distributed
from captioning.checkpoint import CheckpointError, save_checkpoint
from captioning.training.plots import plot_training

log = logging.getLogger(__name__)

# A run's own files: a folder holding one of these holds a run. Hydra's `.hydra/` and `<job>.log`, written into
# the run folder before training starts, are not among them.
RUN_FILES = ("checkpoints", "steps.jsonl", "validation.jsonl", "metrics.json", "config.yaml")
OLD_LOGS = ("steps.jsonl", "validation.jsonl", "tensorboard")  # removed by train.overwrite=true: logs never interleave
LOCK = ".lock"
CLAIMED: set[str] = set()  # real paths of the run folders this process has trained in (see KeepsRunRecord)


class RunFolderError(CheckpointError):
    """A run folder that holds another run, or that another training process is using."""


def run_files(run_dir: Path) -> list[str]:
    """The run files in `run_dir` (a checkpoints/ folder without a finished checkpoint is no run)."""
    return [name for name in RUN_FILES if (run_dir / name).is_file()
            or ((run_dir / name).is_dir() and any(path.suffix != ".tmp" for path in (run_dir / name).iterdir()))]


class RunLock:
    """`run_dir/.lock` holds {"pid", "host"} of the training process using the folder."""

    def __init__(self, run_dir: Path):
        self.run_dir, self.path = run_dir, run_dir / LOCK
        self.owner = {"pid": os.getpid(), "host": socket.gethostname()}

    def acquire(self) -> RunLock:
        while True:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                if not self.run_dir.is_dir():
                    raise RunFolderError(f"{self.run_dir}: the run folder is a file") from None
                self.clear_stale()
                continue
            except OSError as error:
                raise RunFolderError(f"{self.run_dir}: cannot create the run folder's lock ({error})") from error
            with os.fdopen(handle, "w") as file:
                json.dump(self.owner, file)
            return self

    def holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            return None
        ok = isinstance(holder, dict) and isinstance(holder.get("pid"), int) and isinstance(holder.get("host"), str)
        return holder if ok else None

    def clear_stale(self) -> None:
        """Remove a lock whose process has ended on this host; refuse a live one or one that cannot be judged."""
        holder = self.holder()
        if holder == {}:  # released meanwhile
            return
        if holder is None:
            raise RunFolderError(f"{self.path}: a lock file that cannot be read; if no training run is using "
                                 f"{self.run_dir}, remove it and start again")
        if holder["host"] != self.owner["host"]:
            raise RunFolderError(f"another training run (pid {holder['pid']} on host {holder['host']}) is using "
                                 f"{self.run_dir}; if it has ended, remove {self.path}")
        if alive(holder["pid"]):
            raise RunFolderError(f"another training run (pid {holder['pid']}) is using {self.run_dir} "
                                 f"(lock {self.path}); wait for it or choose another run_dir")
        log.warning("%s: taking over the stale lock of pid %d, which has ended", self.path, holder["pid"])
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.holder() == self.owner:
            self.path.unlink(missing_ok=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse a folder holding another run unless it is resumed or `overwrite` (whose old logs are removed)."""
    found = run_files(run_dir)
    if not found or resume:
        return
    if not overwrite:
        raise RunFolderError(f"{run_dir} already holds a run ({', '.join(found)}); give train.resume=... to continue "
                             "it, train.overwrite=true to replace it, or another run folder (hydra.run.dir=...)")
    old_logs = [name for name in OLD_LOGS if (run_dir / name).exists()]
    log.warning("train.overwrite=true: replacing the run in %s (%s); removing its old logs: %s", run_dir,
                ", ".join(found), ", ".join(old_logs) or "none")
    for name in old_logs:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
        else:
            (run_dir / name).unlink()


def check_resume_folder(run_dir: Path, checkpoint: str | Path) -> None:
    """A run resumes in its own folder (the checkpoint's RUN of RUN/checkpoints/x.pt, compared as real paths), or
    branches into a folder holding no run; resuming into another run's folder would replace its checkpoints and mix
    their steps into its logs."""
    checkpoint = Path(checkpoint)
    own = checkpoint.parents[1] if checkpoint.parent.name == "checkpoints" else None
    if own is not None and os.path.realpath(own) == os.path.realpath(run_dir):
        return
    found = run_files(run_dir)
    if found:
        raise RunFolderError(f"train.resume={checkpoint}: the run folder {run_dir} holds another run "
                             f"({', '.join(found)}), not the one of this checkpoint ({own or 'unknown'}); resume in "
                             "the checkpoint's own run folder, or branch into a new one (hydra.run.dir=...)")


def remove_stale_temporaries(run_dir: Path) -> None:
    """`*.tmp` files in checkpoints/ are left by atomic writes a kill interrupted (none is in progress: we hold the lock)."""
    stale = sorted((run_dir / "checkpoints").glob("*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        log.info("removed %d unfinished checkpoint file(s) of an interrupted run: %s", len(stale),
                 ", ".join(path.name for path in stale))


def trim_logs(run_dir: Path, step: int) -> None:
    """A resumed run continues its logs from `step`: lines past it (written by a killed segment after its last
    checkpoint) and a line torn by the kill are dropped, so no step appears twice."""
    for name in ("steps.jsonl", "validation.jsonl"):
        path = run_dir / name
        if not path.is_file():
            continue
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if line.endswith("\n") and logged_step(line) is not None
                and logged_step(line) <= step]
        if len(kept) < len(lines):
            temporary = path.with_name(path.name + ".tmp")
            temporary.write_text("".join(kept))
            os.replace(temporary, path)
            log.info("%s: dropped %d line(s) after step %d, where the run resumes", path, len(lines) - len(kept), step)


def logged_step(line: str) -> int | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row.get("step") if isinstance(row, dict) and isinstance(row.get("step"), int) else None


@contextmanager
def claim_run_dir(run_dir: str | Path, *, resume_step: int | None, overwrite: bool,
                  resume_from: str | Path | None = None) -> Iterator[None]:
    """Hold the run folder for a training run (rank 0 only): lock it, refuse one holding another run unless
    resuming it (from `resume_step`, of checkpoint `resume_from`) or overwriting, clear leftovers of a killed run;
    the lock is released at the end, also on error."""
    if not distributed.is_main():
        CLAIMED.add(os.path.realpath(run_dir))
        yield
        return
    run_dir = Path(run_dir)
    lock = RunLock(run_dir).acquire()
    try:
        if resume_from is not None:
            check_resume_folder(run_dir, resume_from)
        check_run_dir(run_dir, resume_step is not None, overwrite)
        CLAIMED.add(os.path.realpath(run_dir))
        remove_stale_temporaries(run_dir)
        if resume_step is not None:
            trim_logs(run_dir, resume_step)
        yield
    finally:
        lock.release()


class KeepsRunRecord(Callback):
    """A Hydra callback (conf/train.yaml): Hydra writes `.hydra/` (the config, its overrides) into the run folder
    before the command checks anything, so a refused command would replace the record of the run already there
    (a finished run, or one training in it now). The old record is read before Hydra writes, and put back at exit
    unless this process claimed the folder (`claim_run_dir`): a refusal by the options, checkpoint or run-folder
    checks leaves it as it was. Hydra calls no callback after a `SystemExit` (how a refusal ends), hence atexit."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        try:
            run_dir, subdir = Path(str(config.hydra.run.dir)).absolute(), config.hydra.output_subdir
        except Exception:  # a run folder that cannot be resolved yet: Hydra reports it itself
            return
        record = run_dir / str(subdir) if subdir is not None else None
        if record is not None and record.is_dir():
            saved = {path: path.read_bytes() for path in record.rglob("*") if path.is_file()}
            atexit.register(restore_record, run_dir, saved)


def restore_record(run_dir: Path, saved: dict[Path, bytes]) -> None:
    """Put `.hydra/` back as it was, unless this process trained in `run_dir`."""
    if os.path.realpath(run_dir) in CLAIMED:
        return
    for path, content in saved.items():
        if not path.is_file() or path.read_bytes() != content:
            temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            temporary.write_bytes(content)
            os.replace(temporary, path)


class RunLog:
    """Everything written into the run folder goes through here; other DDP ranks write nothing."""

    def __init__(self, run_dir: str | Path, log_every: int):
        self.run_dir = Path(run_dir)
        self.active = distributed.is_main()
        self.log_every = log_every
        self.last_step = 0
        if self.active:
            (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
            self.steps = open(self.run_dir / "steps.jsonl", "a")

    def text(self, name: str, content: str) -> None:
        if self.active:
            (self.run_dir / name).write_text(content)

    def step(self, step: int, epoch: int, loss: float, lr: float) -> None:
        if not self.active:
            return
        self.last_step = step
        self.steps.write(json.dumps({"step": step, "epoch": epoch, "loss": loss, "lr": lr}) + "\n")
        self.steps.flush()  # a killed run keeps every step it logged
        if step % self.log_every == 0:
            self.writer.add_scalar("train/loss", loss, step)
            self.writer.add_scalar("train/lr", lr, step)

    def validation(self, metrics: dict, examples: list[str], step: int, names: tuple[str, ...]) -> None:
        """The scalar metrics `names`, a few examples as text, and a line of validation.jsonl (scalars only)."""
        if not self.active:
            return
        for name in names:
            self.writer.add_scalar(f"val/{name}", metrics[name], step)
        self.writer.add_text("val/examples", "\n\n".join(examples), step)
        with open(self.run_dir / "validation.jsonl", "a") as handle:  # a confusion matrix can be large: not here
            handle.write(json.dumps({k: v for k, v in metrics.items() if not isinstance(v, list)}) + "\n")

    def images(self, name: str, images: list, step: int | None = None) -> None:
        """(H, W, 3) uint8 arrays to TensorBoard as `name/0`, `name/1`, ... at `step` (default: the last logged)."""
        if self.active:
            for index, image in enumerate(images):
                self.writer.add_image(f"{name}/{index}", image, self.last_step if step is None else step,
                                      dataformats="HWC")

    def checkpoint(self, payload: dict, name: str) -> None:
        if self.active:
            save_checkpoint(payload, self.run_dir / "checkpoints" / name)

    def finish(self, result: dict) -> None:
        if not self.active:
            return
        self.writer.close()
        self.steps.close()
        (self.run_dir / "metrics.json").write_text(json.dumps(result, indent=2))
        plot_training(self.run_dir)
