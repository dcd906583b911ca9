"""A memory-mapped store of pooled image features, written once by a frozen encoder, read by training.

Layout of a store folder:
  header.json    encoder name, weights identity, preprocessing, feature size, dtype, row count, complete flag
  index.json     {"ids": [...], "paths": [...]}: row i holds image ids[i]
  features.npy   (N, D) float16 (or float32) memory map
  done.npy       (N,) bool: rows already written, so an interrupted extraction resumes where it stopped
  grid.npy       optional (N, h * w, C) spatial feature grid (for attention models)
Every file is checked against header.json (sizes; at completion, per-chunk checksums): `data/store_files.py`.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from captioning.data.datasets import ImageLoader
from captioning.data.device_decode import DevicePreprocess, JpegBytes, stack_items
from captioning.data.encoding import encode_rows
from captioning.data.feature_rows import Placement, StoreRows, placement
from captioning.data.records import CaptionRecord, DataError, first_items
from captioning.data.regions import read_regions
from captioning.data.store_files import (
    array_shapes,
    check_arrays,
    checksums,
    no_space,
    read_header,
    read_index,
    reserve,
    write_json,
)
from captioning.data.transforms import build_transform

ImageEncoder = Any  # models.encoders.ImageEncoder: name, weights, preprocess, out_dim (data does not import models)

log = logging.getLogger(__name__)

FORMAT = 1


def encoder_identity(encoder: ImageEncoder) -> dict:
    """What a store's rows depend on. Stores are compared key by key with `header.get`, so an older store without
    `grid_size` reads as null: the value of an encoder that does not pool its grid."""
    return {"encoder": encoder.name, "weights": encoder.weights, "preprocess": encoder.preprocess, "dim": encoder.out_dim,
            "grid_size": getattr(encoder, "grid_size", None)}


def unique_images(records: list[CaptionRecord]) -> tuple[list[str], list[str]]:
    """Image ids (as strings) and paths, once each, in first-seen order; an id with two paths is an error."""
    paths: dict[str, str] = {}
    for record in records:
        key = str(record.image_id)
        if paths.setdefault(key, str(record.image_path)) != str(record.image_path):
            raise DataError(f"image id {key} names two files: {paths[key]} and {record.image_path}")
    return list(paths), list(paths.values())


def extract_features(encoder: ImageEncoder, records: list[CaptionRecord], output: str | Path, *, device: torch.device,
                     batch_size: int = 64, num_workers: int = 0, dtype: str = "float16", store_grid: bool = False,
                     amp_dtype: torch.dtype | None = None, decode_on_device: bool = False,
                     verify_finished: bool = True) -> Path:
    """Run the frozen encoder over every image once; resumes an interrupted store, refuses a different or damaged one.
    `decode_on_device`: JPEGs are decoded in batches where the encoder runs (nvJPEG on CUDA; `device_decode`).
    `verify_finished=False`: a finished store's checksums are left to the caller's `FeatureStore`, which verifies
    them as it opens (one pass over the arrays, not two)."""
    if encoder.weights is None:
        raise DataError(f"encoder {encoder.name!r} holds no known pretrained weights (a random network, or one copied "
                        "from a checkpoint that does not record them): its features are not stored (set "
                        "model.encoder.pretrained=true, or leave data.features unset to cache them in memory)")
    output = Path(output).expanduser()
    ids, paths = unique_images(records)
    identity = {"format": FORMAT, **encoder_identity(encoder), "dtype": dtype}
    if finished(output, identity, ids, store_grid, verify_finished):  # read only: runs sharing a store never write
        return output
    with extraction_lock(output):
        if finished(output, identity, ids, store_grid, verify_finished):  # by the process this one waited for
            return output
        fill_store(encoder, output, identity, ids, paths, device=device, batch_size=batch_size,
                   num_workers=num_workers, dtype=dtype, store_grid=store_grid, amp_dtype=amp_dtype,
                   decode_on_device=decode_on_device)
    return output


def finished(output: Path, identity: dict, ids: list[str], store_grid: bool, verify: bool) -> bool:
    """A complete store with checksums that serves these images, with `verify` its files checked against them (a
    damaged one is refused here, naming the file); False when there is none yet or it needs extraction to go on."""
    if not (output / "header.json").is_file():
        return False
    header, stored = open_for_resume(output, identity, ids, store_grid)
    if not (header["complete"] and "checksums" in header):
        return False
    if verify:
        checksums(output, header, stored, verify=True)
    return True


@contextmanager
def extraction_lock(output: Path) -> Iterator[None]:
    """One process extracts into a store at a time (the runs of a multirun over folds share one): the others wait,
    then find it finished. The lock file sits beside the store; the system drops the lock when its holder ends, so
    a killed extraction leaves none behind. Without fcntl (Windows), no lock."""
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        handle = open(output.parent / f".{output.name}.lock", "a")
    except OSError as error:
        raise no_space(output.parent / f".{output.name}.lock", error) from None
    with handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("%s: another process is extracting into this store; waiting for it", output)
                fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def fill_store(encoder: ImageEncoder, output: Path, identity: dict, ids: list[str], paths: list[str], *,
               device: torch.device, batch_size: int, num_workers: int, dtype: str, store_grid: bool,
               amp_dtype: torch.dtype | None, decode_on_device: bool) -> None:
    """Create the store or resume it, encode the rows not done, then record the checksums (under the lock)."""
    if (output / "header.json").is_file():
        header, stored = open_for_resume(output, identity, ids, store_grid)
        path_of = dict(zip(ids, paths, strict=True))  # this run's files: a store's recorded paths are never read;
        ids, paths = stored, [path_of.get(key, "") for key in stored]  # its rows not in this run are all done
    else:
        grid_shape = None
        if store_grid:
            size = encoder.preprocess["input_size"]
            with torch.no_grad():
                probe = encoder.eval().to(device)(torch.zeros(1, 3, size, size, device=device)).grid  # (1, N, C)
            grid_shape = list(probe.shape[1:])
        header = create_store(output, {**identity, "count": len(ids), "grid": grid_shape, "complete": False}, ids, paths)
    features = np.load(output / "features.npy", mmap_mode="r+")
    done = np.load(output / "done.npy", mmap_mode="r+")
    grid = np.load(output / "grid.npy", mmap_mode="r+") if header["grid"] is not None else None
    todo = np.flatnonzero(~done).tolist()
    if todo and len(todo) < len(ids):
        log.info("%s: resuming, %d of %d images already done", output, len(ids) - len(todo), len(ids))

    unique = [CaptionRecord(i, Path(p), "", []) for i, p in zip(ids, paths, strict=True)]
    transform = build_transform(encoder.preprocess)
    images, stack, prepare = ImageLoader(unique, transform), torch.stack, None
    if decode_on_device:
        images, stack = JpegBytes(unique, transform), stack_items
        prepare = DevicePreprocess(encoder.preprocess, images.cpu)
    for rows, out in encode_rows(encoder, images, todo, stack=stack, batch_size=batch_size, device=device,
                                 num_workers=num_workers, amp_dtype=amp_dtype, prepare=prepare,
                                 desc=f"extracting {encoder.name} features"):
        rows = rows.numpy()
        if grid is not None:
            grid[rows] = out.grid.float().cpu().numpy().astype(dtype)
            grid.flush()
        features[rows] = out.pooled.float().cpu().numpy().astype(dtype)
        features.flush()  # features reach the disk before their rows are marked done
        done[rows] = True
        done.flush()
    del features, done, grid
    # One pass over the finished arrays: refuses NaN/Inf rows, and records the checksums every reader verifies
    # (an old store without them gets them here; one that has them must still match them).
    sums = checksums(output, header, ids, verify=header["complete"] and "checksums" in header)
    write_json(output / "header.json", {**header, "complete": True, "checksums": sums})


def create_store(output: Path, header: dict, ids: list[str], paths: list[str]) -> dict:
    """A new store's files, their space reserved; on failure (a full disk) the files made so far are removed."""
    found = [name for name in (*array_shapes(header), "grid.npy", "index.json") if (output / name).exists()]
    if found:  # someone else's files, or a creation killed half-way: neither is to be written over
        raise DataError(f"{output / found[0]}: exists, but {output} has no header.json: not a feature store this "
                        "project finished creating; delete these files or choose another output folder")
    created: list[Path] = []
    try:
        output.mkdir(parents=True, exist_ok=True)
        for name, (shape, dtype) in array_shapes(header).items():
            created.append(output / name)
            try:
                np.lib.format.open_memmap(output / name, mode="w+", dtype=dtype, shape=shape).flush()
            except OSError as error:
                raise no_space(output / name, error) from None
            reserve(output / name)
        created.append(output / "index.json")
        write_json(output / "index.json", {"ids": ids, "paths": paths})
        write_json(output / "header.json", header)  # last: a folder without it is not a store yet
    except (DataError, OSError) as error:
        for path in created:
            path.unlink(missing_ok=True)
        raise error if isinstance(error, DataError) else no_space(output, error) from None
    return header


def open_for_resume(output: Path, identity: dict, ids: list[str], store_grid: bool) -> tuple[dict, list[str]]:
    """An existing store's header and ids (row order), when this extraction may use or continue it: the same encoder,
    every image of this run in it (in any order: the five folds of one image list share a store; a finished store
    may hold more), a grid if one is asked for, and files exactly as its header describes them."""
    header = read_header(output)
    stored = read_index(output, header["count"])
    if {key: header.get(key) for key in identity} != identity or not set(ids) <= set(stored):
        raise DataError(f"{output}: an existing feature store for other images or another encoder; "
                        "choose another output folder or delete it")
    if store_grid and header["grid"] is None:  # the rows done so far have none; a store with one keeps filling it
        raise DataError(f"{output}: an existing feature store without a feature grid; store_grid=true needs "
                        "another output folder")
    if not header["complete"] and len(stored) != len(ids):  # its other images' files are not this run's to read
        raise DataError(f"{output}: an unfinished feature store of {len(stored)} images, {len(stored) - len(ids)} of "
                        "them not in this run's data; finish it with the data it was started for, or choose another "
                        "output folder")
    check_arrays(output, header, ("features.npy", "done.npy", "grid.npy"))
    if header["complete"] and not np.load(output / "done.npy", mmap_mode="r").all():
        raise DataError(f"{output / 'header.json'}: says complete, but done.npy has rows never written")
    return header, stored


class FeatureStore:
    """Read side: check the store's files against its header, then look features up by image id."""

    def __init__(self, path: str | Path):
        self.path = Path(path).expanduser()
        if not (self.path / "header.json").is_file():
            raise DataError(f"{self.path}: not a feature store (no header.json); run scripts/extract_features.py first")
        self.header = read_header(self.path)
        if not self.header["complete"]:
            raise DataError(f"{self.path}: feature extraction did not finish; rerun it to resume")
        self.ids = read_index(self.path, self.header["count"])
        check_arrays(self.path, self.header, ("features.npy", "grid.npy"))
        checksums(self.path, self.header, self.ids, verify=True)  # one pass: damaged chunks, NaN/Inf rows
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

    def reader(self, records: list[CaptionRecord], grid: bool = False) -> StoreRows:
        """These records' features read from the store's memory maps as batches ask for them (row i: record i)."""
        rows = self.rows(records)
        if not grid:
            return StoreRows(self.features, rows)
        if self.header.get("regions"):  # a variable number of regions per image: padded per batch, with a mask
            return StoreRows(self.features, rows, *read_regions(self.path, self.header))
        return StoreRows(self.features, rows, self.grid())

    def grid(self) -> np.ndarray:
        if self.header["grid"] is None:
            raise DataError(f"{self.path}: this decoder attends over feature grids and the store has none; "
                            "extract a store with grids (store_grid=true) into another folder")
        return np.load(self.path / "grid.npy", mmap_mode="r")

    def tables(self, splits: dict[str, list[CaptionRecord]], grid: bool, in_memory: Any,
               device: torch.device) -> tuple[dict[str, Any], Placement]:
        """Each split's features where `data.features_in_memory` puts them: `StoreRows` reading the memory maps, or
        tables in memory (a region store's rows copied into RAM, padded as batches are read) -> tables, placement."""
        readers = {split: self.reader(records, grid) for split, records in splits.items()}
        where = placement(in_memory, sum(reader.nbytes() for reader in readers.values()), device, str(self.path))
        if not where.in_memory:
            return readers, where
        if self.header.get("regions"):
            return {split: reader.in_memory() for split, reader in readers.items()}, where
        return {split: self.table(records, grid) for split, records in splits.items()}, where

    def table(self, records: list[CaptionRecord], grid: bool = False) -> dict[str, torch.Tensor]:
        """The features of these records, in their order: {"pooled": float32 (N, D)}, and with `grid` also
        {"grid": (N, h * w, C)} in the store's dtype (float16 halves the memory; batches are cast as they are used)."""
        rows = self.rows(records)
        table = {"pooled": torch.from_numpy(self.features[rows].astype(np.float32))}
        if grid:
            table["grid"] = torch.from_numpy(np.ascontiguousarray(self.grid()[rows]))
        return table
