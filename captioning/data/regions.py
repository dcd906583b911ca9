"""Precomputed region features (bottom-up attention: one file per image, K regions varying by image) packed into a
feature store, so that COCO users' downloaded features are read, checked and verified like an extracted store.

Input, the layout of ruotianluo/ImageCaptioning.pytorch's data/README:
  input/{id}.npz (array `feat`, (K, C)) or input/{id}.npy (K, C)   the regions (cocobu_att)
  pooled_dir/{id}.npy (C,)                                          optional pooled vectors (cocobu_fc)
  boxes_dir/{id}.npy (K, 4)                                         optional boxes (cocobu_box)
Output: an image store's files (`data/features.py`; features.npy holds the pooled vectors, or each image's mean
region) plus regions.npy (T, C), offsets.npy (N + 1,) and boxes.npy (T, 4), described by header.json's `regions`
(`data/store_files.py`). The store is built in a folder beside `output` and renamed into place once verified, so
a failure leaves nothing behind and `output` is either absent or complete.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from captioning.data.loading import load_splits
from captioning.data.records import DataError, first_items
from captioning.data.store_files import (
    DTYPES,
    FORMAT,
    NPY_HEADERS,
    array_shapes,
    check_arrays,
    checksums,
    no_space,
    read_header,
    read_offsets,
    reserve,
    write_json,
)

log = logging.getLogger(__name__)

SUFFIXES = (".npz", ".npy")
MEMBER = "feat"  # the array of an .npz region file
UNREADABLE = (OSError, ValueError, EOFError, KeyError, SyntaxError, TypeError, zipfile.BadZipFile, zlib.error)


def region_files(folder: Path) -> dict[str, Path]:
    """{image id: its region file} of every .npz or .npy file in `folder`."""
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder of region features ({{image_id}}.npz or {{image_id}}.npy)")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in SUFFIXES and path.is_file():
            if path.stem in files:
                raise DataError(f"{path}: a second region file for image id {path.stem} (also {files[path.stem].name})")
            files[path.stem] = path
    if not files:
        raise DataError(f"{folder}: no region files ({{image_id}}.npz with an array '{MEMBER}', or {{image_id}}.npy)")
    return files


def by_id(key: str) -> tuple:
    """Numeric ids in numeric order (COCO's), then the others as text."""
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def array_header(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of a region file's array from its .npy header alone (for an .npz, of member `feat`, whose
    header is the first bytes decompressed); a file too short for that shape is refused here."""
    try:
        if path.suffix == ".npz":
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
                if f"{MEMBER}.npy" not in names:
                    names = [name.removesuffix(".npy") for name in names]
                    raise DataError(f"{path}: no array '{MEMBER}' (holds {first_items(names) or 'none'})")
                info = archive.getinfo(f"{MEMBER}.npy")
                with archive.open(info) as handle:
                    shape, dtype, start = npy_header(handle)
                size = info.file_size
        else:
            with open(path, "rb") as handle:
                shape, dtype, start = npy_header(handle)
            size = path.stat().st_size
    except DataError:
        raise
    except UNREADABLE as error:
        raise DataError(f"{path}: not a readable .npy or .npz array ({type(error).__name__}: {error})") from None
    if dtype.kind not in "fiu":
        raise DataError(f"{path}: holds {dtype} values; expected numbers")
    if size < start + int(np.prod(shape)) * dtype.itemsize:
        raise DataError(f"{path}: {size} bytes, too few for its {shape} {dtype} array (a truncated file)")
    return shape, dtype


def npy_header(handle: Any) -> tuple[tuple[int, ...], np.dtype, int]:
    """-> shape, dtype, and where the data starts, read from an open .npy stream."""
    version = np.lib.format.read_magic(handle)
    if version not in NPY_HEADERS:
        raise ValueError(f".npy format version {version}")
    shape, _, dtype = NPY_HEADERS[version](handle)
    return tuple(shape), dtype, handle.tell()


def load_array(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The array of a region file, as float32, of the shape its header gave, with no NaN or Inf."""
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                array = archive[MEMBER]
        else:
            array = np.load(path, allow_pickle=False)
    except UNREADABLE as error:
        raise DataError(f"{path}: not a readable .npy or .npz array ({type(error).__name__}: {error})") from None
    if array.shape != shape:
        raise DataError(f"{path}: holds a {array.shape} array where its header said {shape} (changed while packing)")
    array = array.astype(np.float32, copy=False)
    if not np.isfinite(array).all():
        rows = np.flatnonzero(~np.isfinite(array).all(axis=-1)).tolist() if array.ndim == 2 else []
        raise DataError(f"{path}: NaN or Inf values" + (f" in rows {first_items(rows)}" if rows else ""))
    return array


def read_shapes(ids: list[str], files: dict[str, Path], pooled_dir: Path | None, boxes_dir: Path | None
                ) -> tuple[list[int], int]:
    """The first pass, headers only: -> regions per image (K, in `ids`' order) and the width C they share."""
    counts, width = [], None
    for key in tqdm(ids, desc="reading region shapes", leave=False, dynamic_ncols=True):
        path = files[key]
        shape, _ = array_header(path)
        if len(shape) != 2:
            raise DataError(f"{path}: a {len(shape)}-d array {shape}; expected regions (K, C)")
        width = shape[1] if width is None else width
        if shape[1] != width:
            raise DataError(f"{path}: regions of width {shape[1]}, where {files[ids[0]].name} has {width}")
        if shape[0] == 0:
            raise DataError(f"{path}: no regions (a {shape} array); every image needs at least one")
        for folder, expected in ((pooled_dir, (width,)), (boxes_dir, (shape[0], 4))):
            if folder is not None:
                other = folder / f"{key}.npy"
                if not other.is_file():
                    raise DataError(f"{other}: missing (image id {key} has regions in {path})")
                found, _ = array_header(other)
                if found != expected:
                    raise DataError(f"{other}: a {found} array; expected {expected} (image id {key}: {shape[0]} "
                                    f"regions of width {width})")
        counts.append(shape[0])
    return counts, width


def write_store(folder: Path, header: dict, ids: list[str], files: dict[str, Path], counts: list[int],
                pooled_dir: Path | None, boxes_dir: Path | None) -> None:
    """The second pass: every image's regions (and pooled vector, boxes) into the store's arrays in `folder`."""
    arrays = {}
    for name, (shape, dtype) in array_shapes(header).items():
        try:
            arrays[name] = np.lib.format.open_memmap(folder / name, mode="w+", dtype=dtype, shape=shape)
        except OSError as error:
            raise no_space(folder / name, error) from None
        reserve(folder / name)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(counts)
    arrays["offsets.npy"][:] = offsets
    dtype, width = header["dtype"], header["dim"]
    for row, key in enumerate(tqdm(ids, desc="packing regions", leave=False, dynamic_ncols=True)):
        start, end = offsets[row], offsets[row + 1]
        regions = load_array(files[key], (end - start, width))  # (K, C)
        arrays["regions.npy"][start:end] = in_dtype(regions, dtype, files[key])
        if pooled_dir is None:
            arrays["features.npy"][row] = in_dtype(regions.mean(axis=0), dtype, files[key])
        else:
            pooled = pooled_dir / f"{key}.npy"
            arrays["features.npy"][row] = in_dtype(load_array(pooled, (width,)), dtype, pooled)
        if boxes_dir is not None:
            arrays["boxes.npy"][start:end] = load_array(boxes_dir / f"{key}.npy", (end - start, 4))
    arrays["done.npy"][:] = True
    for array in arrays.values():
        array.flush()
    write_json(folder / "index.json", {"ids": ids, "paths": [str(files[key]) for key in ids]})
    check_arrays(folder, header, tuple(arrays))
    # One pass over the finished arrays: the offsets' checks, NaN/Inf rows, and the checksums every reader verifies.
    write_json(folder / "header.json", {**header, "complete": True, "checksums": checksums(folder, header, ids, False)})


def in_dtype(values: np.ndarray, dtype: str, path: Path) -> np.ndarray:
    with np.errstate(over="ignore"):  # refused just below, naming the file
        stored = values.astype(dtype)
    if not np.isfinite(stored).all():
        raise DataError(f"{path}: values beyond {dtype}'s range (largest {np.abs(values).max():g}); pack with "
                        "dtype=float32")
    return stored


def is_region_store(folder: Path) -> bool:
    try:
        return read_header(folder).get("encoder") == "regions"
    except DataError:
        return False


def pack_region_features(input: Path, output: Path, *, ids: list[str] | None = None, pooled_dir: Path | None = None,
                         boxes_dir: Path | None = None, dtype: str = "float16", overwrite: bool = False) -> Path:
    """Pack a folder of per-image region files into a new region store at `output` (absent or empty; with
    `overwrite`, a region store this made is replaced once the new one is complete). `ids`: the captions' image ids,
    each of which must have a file, and no file another id (None: every file, in id order). -> `output`."""
    input, output = Path(input).expanduser(), Path(output).expanduser()
    pooled_dir, boxes_dir = (Path(folder).expanduser() if folder else None for folder in (pooled_dir, boxes_dir))
    if dtype not in DTYPES:
        raise DataError(f"dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if output.exists() and not output.is_dir():
        raise DataError(f"{output}: exists and is not a folder; choose another output folder")
    replace = output.is_dir() and any(output.iterdir())
    if replace and not (overwrite and is_region_store(output)):
        raise DataError(f"{output}: exists and is not empty; nothing is written over (choose another output folder; "
                        "overwrite=true replaces only a region store made by scripts/pack_region_features.py)")
    files = region_files(input)
    if ids is None:
        ids = sorted(files, key=by_id)
    else:
        ids = list(dict.fromkeys(str(key) for key in ids))
        wanted = set(ids)
        extra = next((path for key, path in files.items() if key not in wanted), None)
        if extra is not None:
            raise DataError(f"{extra}: image id {extra.stem} is not in the captions")
        missing = [key for key in ids if key not in files]
        if missing:
            raise DataError(f"{input}: no region file ({{id}}.npz or {{id}}.npy) for {len(missing)} image ids of the "
                            f"captions: {first_items(missing)}")
    counts, width = read_shapes(ids, files, pooled_dir, boxes_dir)
    header = {"format": FORMAT, "encoder": "regions", "weights": f"regions:{input.resolve().name}", "preprocess": None,
              "dim": width, "grid_size": None, "dtype": dtype, "count": len(ids), "grid": None, "complete": False,
              "regions": {"width": width, "max": max(counts), "total": sum(counts), "boxes": boxes_dir is not None}}

    made = next((folder for folder in reversed(output.parents) if not folder.exists()), None)  # to remove on failure
    staging = None
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f"{output.name}.partial-", dir=output.parent))
        write_store(staging, header, ids, files, counts, pooled_dir, boxes_dir)
        move_into_place(staging, output, replace)
    except BaseException as error:  # an interrupted packing too: nothing of it stays
        for folder in (staging, made):
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
        if isinstance(error, OSError):
            raise no_space(output, error) from None
        raise
    log.info("%s: %d images, %d regions (at most %d an image) of width %d", output, len(ids), sum(counts),
             max(counts), width)
    return output


def move_into_place(staging: Path, output: Path, replace: bool) -> None:
    """Rename the finished store to `output`; an old region store there is removed only after that succeeded."""
    if not replace:
        if output.is_dir():
            output.rmdir()  # empty
        os.rename(staging, output)
        return
    old = Path(tempfile.mkdtemp(prefix=f"{output.name}.old-", dir=output.parent))
    os.rename(output, old / output.name)
    try:
        os.rename(staging, output)
    except OSError:
        os.rename(old / output.name, output)
        old.rmdir()
        raise
    shutil.rmtree(old)


def read_regions(store: Path, header: dict) -> tuple[np.ndarray, np.ndarray]:
    """A region store's regions, read-only (T, C) memory map, and offsets (N + 1,) int64: image i's regions are rows
    offsets[i]:offsets[i+1]. Files are checked against the header first (checksums: `store_files.checksums`)."""
    if header.get("regions") is None:
        raise DataError(f"{store / 'header.json'}: not a region store (no 'regions'); pack one with "
                        "scripts/pack_region_features.py")
    check_arrays(store, header, ("regions.npy", "offsets.npy"))
    return np.load(store / "regions.npy", mmap_mode="r"), read_offsets(store, header)


def region_encoder(store: str | Path | None) -> dict | None:
    """The `regions` encoder spec of a region store's header (its widths and origin); None for any other store,
    or no store (yet)."""
    if not store or not (Path(store).expanduser() / "header.json").is_file():
        return None
    header = read_header(Path(store).expanduser())
    if not header.get("regions"):
        return None
    return {"name": "regions", "dim": header["dim"], "grid_dim": header["regions"]["width"], "weights": header["weights"]}


def caption_ids(data_cfg: Any) -> list[str] | None:
    """The image ids a data config's source names (every split; images are not opened), or None without one."""
    if data_cfg is None:
        return None
    splits = load_splits(data_cfg, verify=(), captions=False)
    return list(dict.fromkeys(str(record.image_id) for records in splits.values() for record in records))
