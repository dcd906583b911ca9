"""COCO-size data for the scale rehearsal, written directly: a Karpathy split file and a frozen-CNN grid store.

At scale 1.0: 113,287 train, 5,000 val and 5,000 test images (the Karpathy split), 616,767 captions of 8 to 20
words drawn from a Zipf-like distribution over 10,000 words, and a 123,287 x 49 x 2048 float16 grid store
(24.7 GB). The features are random blocks (their values do not change what is measured: bytes read, memory,
time), so the store is written at disk speed instead of through a CNN.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from tqdm import tqdm

from captioning.data.features import create_store
from captioning.data.records import DataError
from captioning.data.store_files import checksums, write_json

KARPATHY = {"train": 113_287, "val": 5_000, "test": 5_000}
CAPTIONS = 616_767
WORDS = 10_000
IDENTITY = {"encoder": "rehearsal", "weights": "synthetic:random-blocks", "preprocess": None, "grid_size": None}
BLOCK_ROWS = 256  # rows of random values generated once and repeated (rolled) through the store


def split_sizes(scale: float) -> dict[str, int]:
    return {split: max(2, round(count * scale)) for split, count in KARPATHY.items()}


def store_bytes(images: int, cells: int, width: int) -> int:
    return images * width * 2 * (cells + 1) + images  # grid and pooled in float16, done flags


def zipf_vocabulary(words: int) -> tuple[list[str], np.ndarray]:
    """`words` pronounceable distinct words and their probabilities p(rank) ~ 1 / rank^1.1."""
    syllables = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]  # 70
    names = [syllables[i % 70] + syllables[(i // 70) % 70] + (syllables[i // 4900] if i >= 4900 else "")
             for i in range(words)]
    weights = 1.0 / np.arange(1, words + 1) ** 1.1
    return names, weights / weights.sum()


def write_karpathy(path: Path, sizes: dict[str, int], captions: int, seed: int = 0) -> None:
    """A dataset_coco.json of sizes[split] images and `captions` captions in all (5 per image, the rest as sixths)."""
    rng = np.random.default_rng(seed)
    names, probs = zipf_vocabulary(WORDS)
    images = sum(sizes.values())
    per_image = np.full(images, 5)
    per_image[rng.permutation(images)[:max(0, captions - 5 * images)]] += 1
    lengths = rng.integers(8, 21, int(per_image.sum()))
    words = rng.choice(len(names), int(lengths.sum()), p=probs)
    starts = np.concatenate([[0], np.cumsum(lengths)])
    entries, caption = [], 0
    for split, count in sizes.items():
        for _ in range(count):
            index = len(entries)
            sentences = []
            for _ in range(per_image[index]):
                sentences.append({"raw": " ".join(names[w] for w in words[starts[caption]:starts[caption + 1]])})
                caption += 1
            entries.append({"filepath": split, "filename": f"{index:012d}.jpg", "cocoid": index, "split": split,
                            "sentences": sentences})
    path.write_text(json.dumps({"dataset": "coco-rehearsal", "images": entries}))


def write_grid_store(path: Path, ids: list[str], cells: int, width: int, seed: int = 0) -> None:
    """A complete float16 store of pooled (N, width) and grid (N, cells, width) features, with its checksums."""
    header = create_store(path, {"format": 1, **IDENTITY, "dim": width, "dtype": "float16", "count": len(ids),
                                 "grid": [cells, width], "complete": False}, ids, [f"{i}.jpg" for i in ids])
    rng = np.random.default_rng(seed)
    block = rng.standard_normal((BLOCK_ROWS, cells, width), dtype=np.float32).astype(np.float16)
    grid = np.load(path / "grid.npy", mmap_mode="r+")
    pooled = np.load(path / "features.npy", mmap_mode="r+")
    for start in tqdm(range(0, len(ids), BLOCK_ROWS), desc="writing the grid store", leave=False):
        rows = min(BLOCK_ROWS, len(ids) - start)
        chunk = np.roll(block, start // BLOCK_ROWS, axis=0)[:rows]
        grid[start:start + rows] = chunk
        pooled[start:start + rows] = chunk.mean(axis=1, dtype=np.float32)
    grid.flush()
    pooled.flush()
    np.load(path / "done.npy", mmap_mode="r+")[:] = True
    del grid, pooled
    write_json(path / "header.json", {**header, "complete": True, "checksums": checksums(path, header, ids, False)})


def write_region_folder(path: Path, ids: list[str], width: int, seed: int = 0) -> int:
    """`{id}.npz` files holding `feat` (K, width) float32 with K from 10 to 100 (bottom-up-attention's range), as
    ruotianluo/ImageCaptioning.pytorch's cocobu_att; -> bytes written."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    block = rng.standard_normal((100, width), dtype=np.float32)
    written = 0
    for image_id in tqdm(ids, desc="writing region files", leave=False):
        count = int(rng.integers(10, 101))
        np.savez(path / f"{image_id}.npz", feat=np.roll(block, int(image_id), axis=0)[:count])
        written += count * width * 4
    return written


def check_disk(folder: Path, needed: int) -> None:
    """Refuse to start without the space the rehearsal will write, saying how much it needs."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise DataError(f"scratch={folder}: the rehearsal needs {needed / 1e9:.1f} GB of disk and "
                        f"{free / 1e9:.1f} GB are free; choose another folder or a smaller scale")
