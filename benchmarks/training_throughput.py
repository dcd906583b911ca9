"""Throughput of the training paths and of feature extraction, through the project's own code paths.

Each figure is measured after warm-up steps, with CUDA synchronised, and reported with the device name.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.devices import device_name, peak_memory_mib, reset_peak, synchronize
from benchmarks.fakes import fake_records, fake_vocab, make_model
from captioning.data.batches import Features
from captioning.data.datasets import CaptionDataset, ImageLoader, collate
from captioning.data.device_decode import DevicePreprocess, JpegBytes, stack_items
from captioning.data.records import CaptionRecord
from captioning.data.sampler import EpochSampler
from captioning.data.tensor_batches import TensorBatches
from captioning.data.transforms import build_transform
from captioning.execution import resolve_amp, resolve_device
from captioning.models.caption_model import CaptionModel, build_encoder
from captioning.registry import plain
from captioning.training.loop import train_one_epoch
from captioning.vocab import Vocabulary


class Indexed(torch.utils.data.Dataset):
    def __init__(self, load: Callable[[int], object], count: int):
        self.load, self.count = load, count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> object:
        return self.load(index)


def time_training(model: CaptionModel, dataset: CaptionDataset, *, features: torch.Tensor | Features | None, batch_size: int,
                  steps: int, warmup: int, device: torch.device, amp_dtype: torch.dtype | None, num_workers: int,
                  bucket_pool: int = 0, sampling: str = "pairs") -> dict:
    """Captions per second of `train_one_epoch` (the real training step): over cached `features` (N, D), or
    Features with grids for attention decoders, when given, else over the dataset's images. `sampling`: as
    data.sampling (pairs, or grouped: an image's captions in one batch)."""
    cached = features is not None
    sampler = EpochSampler([len(r.captions) for r in dataset.records], sampling, seed=0, batch_size=batch_size,
                           lengths=dataset.caption_lengths(), bucket=bucket_pool)
    if cached:  # as the caption task trains: batches indexed out of tensors on the device
        loader = TensorBatches(features, dataset.tokens, sampler, batch_size, device)
    else:
        loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collate, num_workers=num_workers,
                            pin_memory=device.type == "cuda", persistent_workers=num_workers > 0)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=1e-4, fused=True)  # as conf/optim/adam.yaml
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    common = dict(amp_dtype=amp_dtype, scaler=scaler, grad_clip=5.0)

    def loss_fn(batch: dict) -> tuple[torch.Tensor, int]:  # the caption task's loss: the model's forward
        return model(batch["input"], batch["tokens"], cached)

    train_one_epoch(model, loader, optimizer, device, loss_fn, step=0, max_steps=warmup, **common)
    reset_peak(device)
    synchronize(device)
    start, done = time.perf_counter(), 0
    while done < steps:  # as many passes over the data as the timed steps need
        done, _ = train_one_epoch(model, loader, optimizer, device, loss_fn, step=done, max_steps=steps, **common)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"captions_per_s": steps * batch_size / seconds, "seconds": seconds, "steps": steps,
            "batch_size": batch_size, "peak_memory_mb": peak_memory_mib(device)}


@torch.no_grad()
def time_extraction(encoder: torch.nn.Module, batches: Callable[[], Iterable], *, device: torch.device,
                    amp_dtype: torch.dtype | None, warmup: int = 2, prepare: Callable | None = None) -> dict:
    """Images per second through the frozen encoder over the batches that `batches()` yields; `prepare(batch,
    device)` makes each batch's images on the device (device-side JPEG decoding), else `batch.to(device)`."""
    encoder.eval().to(device)
    context = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else torch.autocast(device.type, enabled=False)

    def run(limit: int) -> tuple[int, int]:
        done = size = 0
        for i, batch in enumerate(batches()):
            if i >= limit:
                break
            images = prepare(batch, device) if prepare is not None else batch.to(device, non_blocking=True)
            with context:
                encoder(images)
            done, size = done + images.size(0), images.size(0)
        return done, size

    run(warmup)
    reset_peak(device)
    synchronize(device)
    start = time.perf_counter()
    images, batch_size = run(10**9)
    synchronize(device)
    seconds = time.perf_counter() - start
    return {"images_per_s": images / seconds, "seconds": seconds, "images": images, "batch_size": batch_size,
            "peak_memory_mb": peak_memory_mib(device)}


def image_paths(image_dir: str | Path | None, count: int, tmp: Path) -> list[Path]:
    """Real JPEGs from `image_dir` when given, else random 320x240 JPEGs written to `tmp`."""
    if image_dir and Path(image_dir).is_dir():
        paths = sorted(Path(image_dir).glob("*.jpg"))[:count]
        return (paths * (count // max(len(paths), 1) + 1))[:count]
    from PIL import Image

    rng = np.random.default_rng(0)
    tmp.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(min(count, 64)):
        path = tmp / f"{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(path, quality=90)
        paths.append(path)
    return (paths * (count // len(paths) + 1))[:count]


def training_benchmarks(cfg, device: torch.device, amp_dtype: torch.dtype | None, tmp: Path) -> list[dict]:
    """Per frozen encoder: cached features vs decoding images through it; fine-tuning the first; then extraction."""
    rows = []
    vocab = fake_vocab(cfg.vocab_size)
    paths = image_paths(cfg.image_dir, cfg.images, tmp)
    records = fake_records(paths, vocab)
    name = device_name(device)
    encoders = [plain(cfg.encoder)] + [plain(extra) for extra in cfg.get("also_frozen") or []]
    for position, encoder_spec in enumerate(encoders):
        model = make_model(encoder_spec, len(vocab), cfg.hidden_size, trainable=False, device=device)
        encoder = model.encoder.name
        features = torch.randn(len(records), model.encoder.out_dim)  # the decoder sees this encoder's feature size
        cached_set = CaptionDataset(records, vocab, 20, features.__getitem__)
        for batch_size in cfg.cached_batch_sizes:
            result = time_training(model, cached_set, features=features, batch_size=batch_size, steps=cfg.cached_steps,
                                   warmup=cfg.warmup, device=device, amp_dtype=amp_dtype, num_workers=0,
                                   bucket_pool=cfg.bucket_pool, sampling=cfg.sampling)
            rows.append({"benchmark": f"train, cached {model.encoder.out_dim}-d features", "path": "cached",
                         "encoder": encoder, "group": position, "device": name, **result})
        if position == 0:
            rows += grid_rows(cfg, encoder_spec, records, vocab, device, amp_dtype, name)
        image_set = CaptionDataset(records, vocab, 20, ImageLoader(records, build_transform(model.encoder.preprocess)))
        result = time_training(model, image_set, features=None, batch_size=cfg.image_batch_size, steps=cfg.image_steps,
                               warmup=1, device=device, amp_dtype=amp_dtype, num_workers=cfg.num_workers,
                               bucket_pool=cfg.bucket_pool, sampling=cfg.sampling)
        rows.append({"benchmark": f"train, decoding images, frozen {encoder}", "path": "images", "encoder": encoder,
                     "group": position, "device": name, **result})
        del model
        if position == 0:
            tuned = make_model(encoder_spec, len(vocab), cfg.hidden_size, trainable=True, device=device)
            result = time_training(tuned, image_set, features=None, batch_size=cfg.image_batch_size,
                                   steps=cfg.image_steps, warmup=1, device=device, amp_dtype=amp_dtype,
                                   num_workers=cfg.num_workers, bucket_pool=cfg.bucket_pool, sampling=cfg.sampling)
            rows.append({"benchmark": f"train, decoding images, fine-tuning {encoder}", "path": "fine-tune",
                         "encoder": encoder, "device": name, **result})
            del tuned

    for extract_cfg in cfg.extraction:
        encoder = build_encoder({**plain(extract_cfg.encoder), "trainable": False}, pretrained=True,
                                where="extraction.encoder")
        transform = build_transform(encoder.preprocess)
        size = encoder.preprocess["input_size"]
        prepare = None
        if extract_cfg.source == "memory":  # model-side throughput: one random batch already on the device
            batch = torch.randn(extract_cfg.batch_size, 3, size, size, device=device)
            repeats = max(extract_cfg.images // extract_cfg.batch_size, 1)
            batches = lambda batch=batch, repeats=repeats: (batch for _ in range(repeats))  # noqa: E731
        elif extract_cfg.source == "device":  # end to end, JPEGs read by workers and decoded in batches on the device
            load = JpegBytes(records[: extract_cfg.images], transform)
            prepare = DevicePreprocess(encoder.preprocess, load.cpu)
            loader = DataLoader(Indexed(load, len(load.cpu.paths)), batch_size=extract_cfg.batch_size,
                                num_workers=cfg.num_workers, collate_fn=stack_items)
            batches = lambda loader=loader: iter(loader)  # noqa: E731
        else:  # end to end: JPEG decoding and resizing in DataLoader workers
            class Images(torch.utils.data.Dataset):
                load = ImageLoader(records[: extract_cfg.images], transform)

                def __len__(self):
                    return len(self.load.paths)

                def __getitem__(self, i):
                    return self.load(i)

            loader = DataLoader(Images(), batch_size=extract_cfg.batch_size, num_workers=cfg.num_workers,
                                pin_memory=device.type == "cuda")
            batches = lambda loader=loader: iter(loader)  # noqa: E731
        result = time_extraction(encoder, batches, device=device, amp_dtype=amp_dtype, prepare=prepare)
        rows.append({"benchmark": f"extract {encoder.name} ({extract_cfg.source}{', amp' if amp_dtype else ''})",
                     "device": name, **result})
        del encoder
    return rows


def grid_rows(cfg, encoder_spec: dict, records: list[CaptionRecord], vocab: Vocabulary, device: torch.device,
              amp_dtype: torch.dtype | None, name: str) -> list[dict]:
    """Attention decoders (`grid_decoders`) trained on cached grids of the encoder's shape, next to the pooled rows."""
    rows = []
    for decoder in cfg.get("grid_decoders") or []:
        model = make_model(encoder_spec, len(vocab), cfg.hidden_size, trainable=False, device=device, decoder=decoder)
        size = model.encoder.preprocess["input_size"]
        with torch.no_grad():
            cells, channels = model.encoder.eval()(torch.zeros(1, 3, size, size, device=device)).grid.shape[1:]
        features = Features(torch.randn(len(records), model.encoder.out_dim),
                            torch.randn(len(records), cells, channels).half())  # as a grid store keeps them
        dataset = CaptionDataset(records, vocab, 20,
                                 lambda i, features=features: Features(features.pooled[i], features.grid[i]))
        for batch_size in cfg.cached_batch_sizes:
            result = time_training(model, dataset, features=features, batch_size=batch_size, steps=cfg.cached_steps,
                                   warmup=cfg.warmup, device=device, amp_dtype=amp_dtype, num_workers=0,
                                   bucket_pool=cfg.bucket_pool, sampling=cfg.sampling)
            rows.append({"benchmark": f"train {decoder}, cached {cells}x{channels} grids", "path": "grid",
                         "sampling": cfg.sampling, "encoder": model.encoder.name, "device": name, **result})
        del model
    return rows


def cached_over_images(rows: list[dict]) -> list[dict]:
    """Per frozen encoder: the best cached-feature training rate over the image-decoding rate."""
    return [{"encoder": row["encoder"], "speedup": max(r["captions_per_s"] for r in rows if r.get("path") == "cached"
                                                       and r["group"] == row["group"]) / row["captions_per_s"]}
            for row in rows if row.get("path") == "images"]


def run(cfg) -> list[dict]:
    """Run the configured set, print the table (device name on every row), optionally write JSON."""
    import json
    import tempfile

    device = resolve_device(cfg.device)
    amp_dtype = resolve_amp(cfg.amp, device)
    with tempfile.TemporaryDirectory() as tmp:
        rows = training_benchmarks(cfg, device, amp_dtype, Path(tmp))
    scst = plain(cfg.get("scst") or {})
    if scst.get("decoders"):
        from benchmarks.scst_throughput import scst_rows

        options = {"device": str(device), "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size,
                   "encoder": plain(cfg.encoder),
                   **{k: scst[k] for k in ("images", "batch_size", "steps", "samples", "baseline", "micro_batch")}}
        rows += [{**row, "path": "scst"} for row in scst_rows(options, scst["decoders"])]
    print(f"\n{'benchmark':58s} {'batch':>6s} {'per second':>12s} {'peak MB':>9s}  device")
    for row in (r for r in rows if r.get("path") != "scst"):
        rate = row.get("captions_per_s", row.get("images_per_s"))
        unit = "captions" if "captions_per_s" in row else "images"
        print(f"{row['benchmark']:58s} {row['batch_size']:6d} {rate:9.0f} {unit[:3]} {row['peak_memory_mb']:9.0f}  {row['device']}")
    scst_table = [row for row in rows if row.get("path") == "scst"]
    if scst_table:
        print(f"\n{'objective, decoder, per step (cached features)':48s} {'seqs':>5s} {'steps/s':>8s} {'seqs/s':>7s} "
              f"{'peak MB':>8s} {'rise MB':>8s} {'rise/XE':>8s}  device")
    for row in scst_table:
        ratio = f"{row['rise_over_xe']:.2f}x" if "rise_over_xe" in row else ""
        print(f"{row['benchmark']:48s} {row['sequences']:5d} {row['steps_per_s']:8.2f} {row['sequences_per_s']:7.0f} "
              f"{row['peak_memory_mb']:8.0f} {row['rise_mb']:8.0f} {ratio:>8s}  {row['device']}")
    speedups = cached_over_images([row for row in rows if row.get("path") != "scst"])
    for pair in speedups:
        print(f"cached-feature training is {pair['speedup']:.1f}x the image-decoding path with the same frozen "
              f"{pair['encoder']} ({rows[0]['device']})")
    if cfg.output:
        Path(cfg.output).write_text(json.dumps({"rows": rows, "cached_over_images": speedups}, indent=1))
    return rows
