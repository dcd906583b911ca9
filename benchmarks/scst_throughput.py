"""Self-critical training next to cross-entropy: steps per second and peak memory at the same batch size, for the
pooled LSTM and the attention decoders, on cached features (the way both stages train in practice).

Memory is measured from just before the first step: on CUDA the peak allocation after `reset_peak`; on Linux
CPUs each row runs in a fresh process (freed memory stays mapped by the allocator, so rows sharing a process would
hide each other's needs) and its peak resident set (VmHWM) is reset through /proc/self/clear_refs. Reported: the
peak, and its rise over the memory held when the window opened (model, features): the optimiser state and the
activations of the steps.
"""
from __future__ import annotations

import multiprocessing
import time
from pathlib import Path

import torch

from benchmarks.devices import device_name, peak_memory_mib, reset_peak, synchronize
from benchmarks.fakes import fake_records, fake_vocab, make_model
from captioning.data.batches import Features
from captioning.data.sampler import EpochSampler
from captioning.data.tensor_batches import TensorBatches
from captioning.evaluation.cider_d import CiderD
from captioning.training.loop import train_one_epoch
from captioning.training.scst import SelfCritical


def status_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, MiB (Linux)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1]) / 1024


def reset_peaks(device: torch.device) -> float:
    """Start a peak-memory window; -> the resident memory now (CPU) or 0 (CUDA, where allocations are counted)."""
    reset_peak(device)
    if device.type == "cuda":
        return 0.0
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current resident set
    return status_mib("VmRSS")


def peak_mib(device: torch.device) -> float:
    return peak_memory_mib(device) if device.type == "cuda" else status_mib("VmHWM")


def time_objective(objective: str, decoder: str, options: dict, batch: int, micro_batch: int | None = None) -> dict:
    """Train `steps` steps of `objective` (xe | scst) with `decoder` on random cached features of the benchmark's
    encoder shape, `batch` captions (xe) or images (scst, each sampled `samples` times) per step, in pieces of
    `micro_batch` (None: whole batches); -> steps/s, sequences/s, peak memory and its rise over the set-up."""
    torch.manual_seed(0)
    device = torch.device(options["device"])
    vocab = fake_vocab(options["vocab_size"])
    records = fake_records([f"image_{i}.jpg" for i in range(options["images"])], vocab)
    model = make_model(options["encoder"], len(vocab), options["hidden_size"], trainable=False, device=device,
                       decoder=decoder)
    size = model.encoder.preprocess["input_size"]
    with torch.no_grad():
        grid = model.encoder.eval()(torch.zeros(1, 3, size, size, device=device)).grid
    features = Features(torch.randn(len(records), model.encoder.out_dim),
                        torch.randn(len(records), *grid.shape[1:]).half() if model.decoder.uses_grid else None)
    from captioning.data.datasets import CaptionDataset

    dataset = CaptionDataset(records, vocab, 20, lambda i: i)
    scst = objective == "scst"
    sampler = EpochSampler([len(r.captions) for r in records], "random_caption" if scst else "pairs", seed=0,
                           batch_size=batch)
    loader = TensorBatches(features, dataset.tokens, sampler, batch, device)
    if scst:
        references = [[caption.split() for caption in record.captions] for record in records]
        loss = SelfCritical(model, vocab, references, CiderD(references), samples=options["samples"],
                            baseline=options["baseline"], temperature=1.0, max_tokens=21, cached=True)
        loss_fn = lambda b: loss(model, b)  # noqa: E731
    else:
        loss_fn = lambda b: model(b["input"], b["tokens"], True)  # noqa: E731
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    synchronize(device)
    before = reset_peaks(device)  # the window holds the optimiser state and every step's activations
    common = {"grad_clip": 5.0, "micro_batch": micro_batch}
    train_one_epoch(model, loader, optimizer, device, loss_fn, step=0, max_steps=1, **common)  # warm-up
    synchronize(device)
    start, done = time.perf_counter(), 0
    while done < options["steps"]:
        done, _ = train_one_epoch(model, loader, optimizer, device, loss_fn, step=done, max_steps=options["steps"],
                                  **common)
    synchronize(device)
    seconds = time.perf_counter() - start
    peak = peak_mib(device)
    sequences = batch * options["samples"] if scst else batch
    pieces = f" in pieces of {micro_batch}" if micro_batch else ""
    return {"benchmark": f"{objective} {decoder}, {batch} {'images' if scst else 'captions'}{pieces}",
            "objective": objective, "decoder": decoder, "batch_size": batch, "micro_batch": micro_batch,
            "sequences": sequences, "steps_per_s": done / seconds,
            "sequences_per_s": done * sequences / seconds,
            "peak_memory_mb": peak, "rise_mb": peak - before,
            "device": device_name(device)}


def scst_rows(options: dict, decoders: list[str]) -> list[dict]:
    """Per decoder: cross-entropy on `batch_size` captions per step, SCST on `batch_size` images per step (what
    train.batch_size means for each objective), at once and in pieces of `micro_batch` images (train.micro_batch: the
    same update, about as many sequences at a time as cross-entropy), with the rise of SCST's memory over
    cross-entropy's."""
    rows = []
    for decoder in decoders:
        xe = measured("xe", decoder, options, options["batch_size"])
        rows.append(xe)
        for micro_batch in (None, options["micro_batch"]):
            row = measured("scst", decoder, options, options["batch_size"], micro_batch)
            rows.append({**row, "rise_over_xe": row["rise_mb"] / max(xe["rise_mb"], 1.0)})
    return rows


def measured(objective: str, decoder: str, options: dict, batch: int, micro_batch: int | None = None) -> dict:
    """`time_objective` in a fresh process on the CPU (its own peak resident set), in this one on CUDA."""
    if options["device"] != "cpu":
        return time_objective(objective, decoder, options, batch, micro_batch)
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(time_objective, (objective, decoder, options, batch, micro_batch))
