"""Seed, device, mixed precision and RNG state: what every run sets up before its first step."""
from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

AMP_CHOICES = ("auto", "bf16", "fp16", "off")


def rank_seed(seed: int, rank: int) -> int:
    """Each DDP rank's own seed (dropout masks differ across ranks); rank 0 keeps `seed`, so one process is unchanged."""
    return seed + 1_000_003 * rank


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str | torch.device, key: str = "device") -> torch.device:
    if str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"{key}={name!r} is not a device (auto | cpu | cuda | cuda:N)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{key}={str(name)!r} but CUDA is not available here")
    return device


def resolve_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """Mixed precision on CUDA only: auto picks bf16 where supported, else fp16 (with a grad scaler)."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"train.amp must be one of {'|'.join(AMP_CHOICES)}, got {amp!r}")
    if device.type != "cuda" or amp == "off":
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def autocast(device: torch.device, dtype: torch.dtype | None):
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


def to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


def batch_size(batch: dict) -> int:
    """Examples in a batch (every batch carries their dataset indices)."""
    return len(batch["index"])


def split_batch(batch: dict, size: int) -> list[dict]:
    """The batch in pieces of at most `size` examples, in order: every value (tensors, Features, Clips) cut along
    dim 0."""
    total = batch_size(batch)
    pieces = []
    for start in range(0, total, size):
        pieces.append({key: value.index_select(0, torch.arange(start, min(start + size, total), device=value.device))
                       for key, value in batch.items()})
    return pieces


def rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy": [numpy_state[0], numpy_state[1].tolist(), *numpy_state[2:]], "python": random.getstate()}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np.random.set_state((state["numpy"][0], np.array(state["numpy"][1], dtype=np.uint32), *state["numpy"][2:]))
    random.setstate(state["python"])
