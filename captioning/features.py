"""A memory-mapped store of pooled image features, written once by a frozen encoder, read by training.

Layout of a store folder:
  header.json    encoder name, weights identity, preprocessing, feature size, dtype, row count, complete flag
  index.json     {"ids": [...], "paths": [...]}: row i holds image ids[i]
  features.npy   (N, D) float16 (or float32) memory map
  done.npy       (N,) bool: rows already written, so an interrupted extraction resumes where it stopped
  grid.npy       optional (N, C, h, w) spatial feature grid (for attention models)
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioning.data.dataset import ImageLoader, build_transform
from captioning.data.records import CaptionRecord, DataError, _first
from captioning.models.encoders import ImageEncoder

log = logging.getLogger(__name__)

FORMAT = 1


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
    def __init__(self, rows: list[int], load):
        self.rows, self.load = rows, load

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor]:
        return self.rows[i], self.load(self.rows[i])


@torch.no_grad()
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
        header = json.loads((output / "header.json").read_text())
        index = json.loads((output / "index.json").read_text())
        if {k: header.get(k) for k in identity} != identity or index["ids"] != ids:
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
        probe = encoder.grid(torch.zeros(1, 3, encoder.preprocess["input_size"], encoder.preprocess["input_size"], device=device))
        grid_path = output / "grid.npy"
        grid = (np.load(grid_path, mmap_mode="r+") if grid_path.is_file() else
                np.lib.format.open_memmap(grid_path, mode="w+", dtype=dtype, shape=(len(ids), *probe.shape[1:])))

    transform = build_transform(encoder.preprocess)
    images = ImageLoader([CaptionRecord(i, Path(p), "", []) for i, p in zip(ids, paths)], transform)
    loader = DataLoader(_Rows(todo, images), batch_size=batch_size, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    encoder.eval().to(device)
    autocast = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else torch.autocast(device.type, enabled=False)
    for rows, batch in tqdm(loader, desc=f"extracting {encoder.name} features", dynamic_ncols=True):
        batch = batch.to(device, non_blocking=True)
        with autocast:
            pooled = encoder(batch)
            if grid is not None:
                grid[rows.numpy()] = encoder.grid(batch).float().cpu().numpy().astype(dtype)
        features[rows.numpy()] = pooled.float().cpu().numpy().astype(dtype)
        features.flush()  # features reach the disk before their rows are marked done
        if grid is not None:
            grid.flush()
        done[rows.numpy()] = True
        done.flush()
    verify_store(output, expected_count=len(ids), expected_dim=encoder.out_dim)
    header = json.loads((output / "header.json").read_text())
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
        self.header = json.loads((self.path / "header.json").read_text())
        if not self.header.get("complete"):
            raise DataError(f"{self.path}: feature extraction did not finish; rerun it to resume")
        self.ids = json.loads((self.path / "index.json").read_text())["ids"]
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
            raise DataError(f"{self.path}: {len(missing)} images are not in the feature store: ids {_first(missing)}")
        return np.array([self.row[str(record.image_id)] for record in records])

    def table(self, records: list[CaptionRecord]) -> torch.Tensor:
        """The features of these records, in their order, as one float32 (N, D) tensor."""
        return torch.from_numpy(self.features[self.rows(records)].astype(np.float32))


def extract_from_config(cfg) -> Path:
    """`scripts/extract_features.py`: the configured splits through the configured encoder."""
    from hydra.utils import instantiate

    from captioning.train import load_splits, resolve_amp, resolve_device

    device = resolve_device(cfg.device)
    splits = load_splits(cfg.data, verify=tuple(cfg.splits))
    records = [record for split in cfg.splits for record in splits.get(split, [])]
    encoder = instantiate(cfg.model.encoder, trainable=False)
    return extract_features(encoder, records, cfg.output, device=device, batch_size=cfg.batch_size,
                            num_workers=cfg.data.num_workers, dtype=cfg.dtype, store_grid=cfg.store_grid,
                            amp_dtype=resolve_amp(cfg.amp, device))
