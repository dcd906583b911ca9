"""A memory-mapped store of pooled image features, written once by a frozen encoder, read by training.

Layout of a store folder:
  header.json    encoder name, weights identity, preprocessing, feature size, dtype, row count, complete flag
  index.json     {"ids": [...], "paths": [...]}: row i holds image ids[i]
  features.npy   (N, D) float16 (or float32) memory map
  done.npy       (N,) bool: rows already written, so an interrupted extraction resumes where it stopped
  grid.npy       optional (N, h * w, C) spatial feature grid (for attention models)
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioning.data.datasets import Clips, ImageLoader
from captioning.data.records import CaptionRecord, DataError, first_items
from captioning.data.transforms import build_transform
from captioning.registry import find_code_reference
from captioning.runtime import autocast

ImageEncoder = Any  # models.encoders.ImageEncoder: name, weights, preprocess, out_dim (data does not import models)

log = logging.getLogger(__name__)

FORMAT = 1


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: unreadable feature-store file ({type(error).__name__}: {error})") from error


def _write_json(path: Path, data: dict) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(data, indent=1))
    os.replace(temporary, path)


def encoder_identity(encoder: ImageEncoder) -> dict:
    return {"encoder": encoder.name, "weights": encoder.weights, "preprocess": encoder.preprocess, "dim": encoder.out_dim}


def unique_images(records: list[CaptionRecord]) -> tuple[list[str], list[str]]:
    """Image ids (as strings) and paths, once each, in first-seen order; an id with two paths is an error."""
    paths: dict[str, str] = {}
    for record in records:
        key = str(record.image_id)
        if paths.setdefault(key, str(record.image_path)) != str(record.image_path):
            raise DataError(f"image id {key} names two files: {paths[key]} and {record.image_path}")
    return list(paths), list(paths.values())


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[int], load: Callable[[int], Any]):
        self.rows, self.load = rows, load

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return self.rows[i], self.load(self.rows[i])


class _Stack:
    def __init__(self, stack: Callable[[list], Any]):
        self.stack = stack

    def __call__(self, items: list[tuple[int, Any]]) -> tuple[torch.Tensor, Any]:
        return torch.tensor([row for row, _ in items]), self.stack([item for _, item in items])


@torch.no_grad()
def encode_rows(encoder: torch.nn.Module, load: Callable[[int], Any], rows: list[int], *, stack: Callable[[list], Any],
                batch_size: int, device: torch.device, num_workers: int = 0, amp_dtype: torch.dtype | None = None,
                desc: str = "encoding") -> Iterator[tuple[torch.Tensor, Any]]:
    """The one pass of a frozen encoder over inputs: yields (rows (b,), encoder output) batch by batch.

    `load(row)` gives one input (an image tensor or a clip), `stack` batches them; the output is the
    encoder's (`Features` for images, `Clips` of per-frame features for clips).
    """
    encoder.eval().to(device)
    loader = DataLoader(_Rows(rows, load), batch_size=batch_size, num_workers=num_workers, collate_fn=_Stack(stack),
                        pin_memory=device.type == "cuda")
    for batch_rows, batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        with autocast(device, amp_dtype):
            yield batch_rows, encoder(batch.to(device, non_blocking=True))


def cache_features(encoder: torch.nn.Module, load: Callable[[int], Any], count: int, **options) -> dict[str, torch.Tensor]:
    """Encode every input once for the run -> float32 tensors on the CPU, row = record index:
    {"pooled": (N, D)} for images, {"frames": (N, T, D), "mask": (N, T)} for clips (`encode_rows` options)."""
    table: dict[str, torch.Tensor] = {}
    for rows, out in encode_rows(encoder, load, list(range(count)), **options):
        parts = {"frames": out.frames.float(), "mask": out.mask} if isinstance(out, Clips) else {"pooled": out.pooled.float()}
        for name, value in parts.items():
            if name not in table:
                table[name] = torch.zeros(count, *value.shape[1:], dtype=value.dtype)
            table[name][rows] = value.cpu()
    return table


def extract_features(encoder: ImageEncoder, records: list[CaptionRecord], output: str | Path, *, device: torch.device,
                     batch_size: int = 64, num_workers: int = 0, dtype: str = "float16", store_grid: bool = False,
                     amp_dtype: torch.dtype | None = None) -> Path:
    """Run the frozen encoder over every image once; resumes an interrupted store, refuses a different one."""
    if encoder.weights is None:
        raise ValueError(f"encoder {encoder.name!r} has no pretrained weights: features of a random network "
                         "are not worth caching (set model.encoder.pretrained=true)")
    output = Path(output).expanduser()
    ids, paths = unique_images(records)
    identity = {"format": FORMAT, **encoder_identity(encoder), "dtype": dtype, "count": len(ids)}
    if (output / "header.json").is_file():
        header, index = read_json(output / "header.json"), read_json(output / "index.json")
        if {k: header.get(k) for k in identity} != identity or index.get("ids") != ids:
            raise DataError(f"{output}: an existing feature store for other images or another encoder; "
                            "choose another output folder or delete it")
    else:
        output.mkdir(parents=True, exist_ok=True)
        _write_json(output / "index.json", {"ids": ids, "paths": paths})
        np.lib.format.open_memmap(output / "features.npy", mode="w+", dtype=dtype, shape=(len(ids), encoder.out_dim)).flush()
        np.lib.format.open_memmap(output / "done.npy", mode="w+", dtype=bool, shape=(len(ids),)).flush()
        _write_json(output / "header.json", {**identity, "grid": None, "complete": False})
    features = np.load(output / "features.npy", mmap_mode="r+")
    done = np.load(output / "done.npy", mmap_mode="r+")
    todo = np.flatnonzero(~done).tolist()
    if todo and len(todo) < len(ids):
        log.info("%s: resuming, %d of %d images already done", output, len(ids) - len(todo), len(ids))

    grid = None
    if store_grid:
        size = encoder.preprocess["input_size"]
        with torch.no_grad():
            probe = encoder.eval().to(device)(torch.zeros(1, 3, size, size, device=device)).grid  # (1, N, C)
        grid_path = output / "grid.npy"
        grid = (np.load(grid_path, mmap_mode="r+") if grid_path.is_file() else
                np.lib.format.open_memmap(grid_path, mode="w+", dtype=dtype, shape=(len(ids), *probe.shape[1:])))

    images = ImageLoader([CaptionRecord(i, Path(p), "", []) for i, p in zip(ids, paths)], build_transform(encoder.preprocess))
    for rows, out in encode_rows(encoder, images, todo, stack=torch.stack, batch_size=batch_size, device=device,
                                 num_workers=num_workers, amp_dtype=amp_dtype, desc=f"extracting {encoder.name} features"):
        rows = rows.numpy()
        if grid is not None:
            grid[rows] = out.grid.float().cpu().numpy().astype(dtype)
            grid.flush()
        features[rows] = out.pooled.float().cpu().numpy().astype(dtype)
        features.flush()  # features reach the disk before their rows are marked done
        done[rows] = True
        done.flush()
    verify_store(output, expected_count=len(ids), expected_dim=encoder.out_dim)
    header = read_json(output / "header.json")
    _write_json(output / "header.json", {**header, "grid": list(grid.shape[1:]) if grid is not None else None, "complete": True})
    return output


def verify_store(path: Path, expected_count: int, expected_dim: int) -> None:
    features = np.load(path / "features.npy", mmap_mode="r")
    done = np.load(path / "done.npy", mmap_mode="r")
    if features.shape != (expected_count, expected_dim):
        raise DataError(f"{path}: features have shape {features.shape}, expected {(expected_count, expected_dim)}")
    if not done.all():
        raise DataError(f"{path}: {int((~done).sum())} rows were never written")
    if not np.isfinite(features).all():
        raise DataError(f"{path}: non-finite feature values")


class FeatureStore:
    """Read side: check the store fits the run's encoder, then look features up by image id."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not (self.path / "header.json").is_file():
            raise DataError(f"{self.path}: not a feature store (no header.json); run scripts/extract_features.py first")
        self.header = read_json(self.path / "header.json")
        problem = find_code_reference(self.header, "header") if isinstance(self.header, dict) else "header: not a mapping"
        if problem:
            raise DataError(f"{self.path / 'header.json'}: {problem}")
        if not self.header.get("complete"):
            raise DataError(f"{self.path}: feature extraction did not finish; rerun it to resume")
        self.ids = read_json(self.path / "index.json").get("ids", [])
        self.row = {image_id: row for row, image_id in enumerate(self.ids)}
        self.features = np.load(self.path / "features.npy", mmap_mode="r")

    def check_encoder(self, encoder: ImageEncoder) -> None:
        wanted = encoder_identity(encoder)
        different = [f"{key}: store has {self.header.get(key)!r}, run wants {value!r}"
                     for key, value in wanted.items() if self.header.get(key) != value]
        if different:
            raise DataError(f"{self.path}: feature store made with a different encoder: " + "; ".join(different))

    def rows(self, records: list[CaptionRecord]) -> np.ndarray:
        missing = [record.image_id for record in records if str(record.image_id) not in self.row]
        if missing:
            raise DataError(f"{self.path}: {len(missing)} images are not in the feature store: ids {first_items(missing)}")
        return np.array([self.row[str(record.image_id)] for record in records])

    def table(self, records: list[CaptionRecord]) -> torch.Tensor:
        """The features of these records, in their order, as one float32 (N, D) tensor."""
        return torch.from_numpy(self.features[self.rows(records)].astype(np.float32))
