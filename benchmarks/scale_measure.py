"""The scale rehearsal's measurements, each run in a fresh process so that its peak memory is its own.

`training_row`: start-up (split file read and checked, vocabulary, captions encoded, feature store verified),
seconds per training step from the store (streamed or in memory), greedy validation over the val split.
`scoring_row`: the four COCO scorers over the val split, and the CIDEr-D reward with the training captions'
document frequencies (what self-critical training computes every step).
"""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from benchmarks.devices import device_name, synchronize
from captioning.data.batches import Features
from captioning.data.datasets import CaptionDataset, collate
from captioning.data.feature_rows import StoreRows, placement
from captioning.data.features import FeatureStore
from captioning.data.loading import load_splits
from captioning.data.records import DataError
from captioning.data.sampler import EpochSampler
from captioning.data.tensor_batches import TensorBatches
from captioning.evaluation.cider_d import CiderD
from captioning.evaluation.coco import coco_scores
from captioning.execution import resolve_device
from captioning.models.caption_model import build_caption_model
from captioning.training.loop import train_one_epoch
from captioning.training.validation import greedy_captions
from captioning.vocab import Vocabulary, tokenize


class MemoryWatch:
    """Peak resident memory (VmHWM) and peak anonymous memory (RssAnon, sampled): file pages of a memory map
    count in the first and not in the second; the kernel can drop them, not anonymous pages."""

    def __init__(self, every: float = 0.02):
        self.peak_anon, self.every, self.stop = 0, every, threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    @staticmethod
    def status() -> dict[str, int]:
        fields = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmHWM", "RssAnon"):
                fields[key] = int(value.split()[0]) * 1024
        return fields

    def sample(self) -> None:
        while not self.stop.is_set():
            self.peak_anon = max(self.peak_anon, self.status().get("RssAnon", 0))
            time.sleep(self.every)

    def peaks(self) -> dict[str, float]:
        self.peak_anon = max(self.peak_anon, self.status().get("RssAnon", 0))
        return {"peak_rss_gb": round(self.status()["VmHWM"] / 1e9, 3), "peak_anon_gb": round(self.peak_anon / 1e9, 3)}


def karpathy_data(folder: Path) -> dict:
    """The data config of the rehearsal's split file: no image files exist, so none are opened."""
    return {"source": {"name": "karpathy", "dataset_json": str(folder / "dataset_coco.json"),
                       "image_root": str(folder / "images"), "restval_as_train": True},
            "verify_images": "none", "on_bad_caption": "error"}


def quiet(threads: int) -> None:
    """A measuring process: `threads` torch threads, no progress bars between the table's rows."""
    torch.set_num_threads(threads)
    os.environ["TQDM_DISABLE"] = "1"


def training_row(folder: str, decoder: str, path: str, *, batch_size: int, steps: int, warmup: int, hidden: int,
                 max_words: int, min_count: int, threads: int, device: str = "cpu") -> dict:
    quiet(threads)
    folder, device, watch = Path(folder), resolve_device(device), MemoryWatch()
    start = time.perf_counter()
    splits = load_splits(karpathy_data(folder))
    vocab = Vocabulary.build((c for r in splits["train"] for c in r.captions), min_count)
    store = FeatureStore(folder / "store")
    grid = decoder != "lstm"
    readers = {split: store.reader(splits[split], grid) for split in ("train", "val")}
    needed = sum(reader.nbytes() for reader in readers.values())
    row = {"decoder": decoder, "path": path, "images": sum(len(s) for s in splits.values()),
           "captions": sum(len(r.captions) for s in splits.values() for r in s), "vocab": len(vocab),
           "batch_size": batch_size, "features_gb": round(needed / 1e9, 3)}
    try:
        where = placement(path == "in_memory", needed, device, str(store.path))
    except DataError as refused:
        return {**row, "refused": str(refused), **watch.peaks()}
    datasets = {split: CaptionDataset(splits[split], vocab, max_words, readers[split].item) for split in readers}
    row["startup_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    features: torch.Tensor | Features | StoreRows = readers["train"]
    if where.in_memory:
        table = store.table(splits["train"], grid)
        features = Features(table["pooled"], table["grid"]) if grid else table["pooled"]
    row["load_s"] = round(time.perf_counter() - start, 1)

    spec = {"encoder": {"name": "regions", "dim": store.header["dim"], "grid_dim": store.header["grid"][1],
                        "weights": store.header["weights"]},
            "decoder": {"name": decoder, "embed_size": hidden, "hidden_size": hidden,
                        **({"attention_size": hidden} if grid else {})}}
    model = build_caption_model(spec, len(vocab)).to(device)
    sampler = EpochSampler([len(r.captions) for r in splits["train"]], "random_caption", seed=0, batch_size=batch_size)
    loader = TensorBatches(features, datasets["train"].tokens, sampler, batch_size, device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)

    def loss_fn(batch: dict) -> tuple[torch.Tensor, int]:
        return model(batch["input"], batch["tokens"], True)

    train_one_epoch(model, loader, optimizer, device, loss_fn, step=0, max_steps=warmup, grad_clip=5.0)
    synchronize(device)
    start = time.perf_counter()
    train_one_epoch(model, loader, optimizer, device, loss_fn, step=0, max_steps=steps, grad_clip=5.0)
    synchronize(device)
    row["step_s"] = round((time.perf_counter() - start) / steps, 4)
    row["captions_per_s"] = round(batch_size / row["step_s"], 1)

    val = DataLoader(datasets["val"], batch_size=batch_size, sampler=[(i, 0) for i in range(len(datasets["val"]))],
                     collate_fn=collate)
    start = time.perf_counter()
    captions = greedy_captions(model, val, vocab, device, cached=True, max_tokens=max_words + 1, desc="greedy val")
    synchronize(device)
    row["val_greedy_s"], row["val_images"] = round(time.perf_counter() - start, 1), len(captions)
    return {**row, "placement": where.reason, "device": device_name(device), **watch.peaks()}


def scoring_row(folder: str, *, java: str, reward_captions: int, threads: int) -> dict:
    """Each val image's first caption scored against its others with BLEU, METEOR, ROUGE-L and CIDEr (real caption
    lengths, unlike an untrained model's), and CIDEr-D rewards of sampled training captions."""
    quiet(threads)
    watch = MemoryWatch()
    splits = load_splits(karpathy_data(Path(folder)))
    val = splits["val"]
    references = {r.image_id: r.captions[1:] for r in val}
    hypotheses = {r.image_id: r.captions[0] for r in val}
    start = time.perf_counter()
    scores = coco_scores(references, hypotheses, java=java, spice=False, meteor="required")
    score_s = time.perf_counter() - start
    missing = [name for name in ("BLEU-4", "METEOR", "ROUGE-L", "CIDEr") if scores.metrics.get(name) is None]
    if missing:
        raise DataError(f"scoring the val split gave no {', '.join(missing)} (java={java}: {scores.skipped})")

    start = time.perf_counter()
    train_refs = [[tokenize(c) for c in r.captions] for r in splits["train"]]
    reward = CiderD(train_refs)
    frequencies_s = time.perf_counter() - start
    rng = np.random.default_rng(0)
    images = rng.integers(0, len(train_refs), reward_captions)
    candidates = [train_refs[int(rng.integers(len(train_refs)))][0] for _ in range(reward_captions)]
    start = time.perf_counter()
    reward.scores(candidates, [train_refs[i] for i in images], keys=images.tolist())
    return {"val_scored": len(val), "score_s": round(score_s, 1), "scores": scores.metrics,
            "reward_frequencies_s": round(frequencies_s, 1),
            "reward_captions_per_s": round(reward_captions / (time.perf_counter() - start), 1), **watch.peaks()}
