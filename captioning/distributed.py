"""DistributedDataParallel plumbing for torchrun: process group, rank checks and reductions.

Under `torchrun --nproc_per_node=N` (WORLD_SIZE > 1) training joins a process group (NCCL on CUDA,
gloo on CPU); in a single process every helper here is a no-op, so the training code has one path.
"""
from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as dist

from captioning.execution import resolve_device


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Only rank 0 writes logs, checkpoints and metrics."""
    return rank() == 0


def setup(device_name: str) -> torch.device:
    """Join the process group when launched by torchrun (WORLD_SIZE > 1); returns this process's device."""
    device = resolve_device(device_name, "train.device")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30))
    elif dist.is_initialized() and device.type == "cuda":
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def sum_all(*values: float | int, device: torch.device) -> list[float]:
    """Sum numbers over all ranks (one all_reduce)."""
    if not dist.is_initialized():
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def gather_dict(local: dict) -> dict:
    """Merge a dict from every rank (e.g. captions decoded on each rank's shard of the split)."""
    if not dist.is_initialized():
        return local
    parts = [None] * world_size()
    dist.all_gather_object(parts, local)
    merged = {}
    for part in parts:
        merged.update(part)
    return merged


def gather_list(local) -> list:
    """[rank 0's value, rank 1's, ...] on every rank (e.g. each rank's RNG state for a checkpoint)."""
    if not dist.is_initialized():
        return [local]
    parts = [None] * world_size()
    dist.all_gather_object(parts, local)
    return parts


def broadcast_module(module: torch.nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (ranks are seeded apart, so their random inits differ)."""
    if dist.is_initialized():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def shard(items: list) -> list:
    """This rank's share of a list (every world_size-th item)."""
    return items[rank()::world_size()]


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
