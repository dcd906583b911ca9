"""The files of a feature store (`data/features.py`) checked against its header.json, so that a damaged store is
refused with the file and rows named instead of being read, resumed into or trained on.

- header.json and index.json: JSON of the expected shape, no code named, as many ids as the header's rows;
- each .npy array: the shape and dtype the header implies, and exactly as many bytes (a truncated file would be
  zero-filled by numpy's read-write memory map, an extended one read silently);
- at completion, the header records a sha256 per chunk of rows of each array and one of index.json; a complete
  store is verified against them in one pass, which also names rows holding NaN or Inf;
- the arrays' space is reserved when the store is created: memory-mapped pages are written lazily, so a full disk
  would otherwise kill extraction with SIGBUS and no message;
- a region store (`data/regions.py`; header.json's `regions`) also holds regions.npy (T, C), offsets.npy (N + 1,)
  int64 (image i's regions are rows offsets[i]:offsets[i+1]) and, optionally, boxes.npy (T, 4) float32.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from captioning.data.records import DataError, first_items, record_size_error
from captioning.registry import find_code_reference

FORMAT = 1  # header.json's "format"
CHUNK_BYTES = 16 << 20  # rows per checksum: at most 4096, and at most this many bytes
CHUNK_ROWS = 4096
DTYPES = ("float16", "float32")
HEADER_TYPES = {"format": int, "encoder": str, "dim": int, "dtype": str, "count": int, "complete": bool}
NPY_HEADERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
REGION_ROWS = ("regions.npy", "boxes.npy")  # arrays with one row per region, not per image


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_json(path: Path) -> Any:
    if (too_big := record_size_error(path)) is not None:
        raise DataError(too_big)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as error:
        raise DataError(f"{path}: unreadable feature-store file ({type(error).__name__}: {error})") from error


def no_space(path: Path, error: OSError, need: str = "") -> DataError:
    """The project's error for a failed write: a full disk says so first, with the path."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return DataError(f"No space left on device: {path}{need}; free some space or choose another output folder")
    return DataError(f"{path}: cannot be written ({error.strerror or error})")


def write_json(path: Path, data: dict) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # its own: two writers never rename each other's
    try:
        temporary.write_text(json.dumps(data, indent=1))
        os.replace(temporary, path)
    except OSError as error:
        raise no_space(path, error) from None


def read_header(store: Path) -> dict:
    """header.json: a plain JSON object (no `_target_`) with the keys and types a store needs."""
    path = store / "header.json"
    header = read_json(path)
    problem = find_code_reference(header, "header") if isinstance(header, dict) else "header: not a JSON object"
    if problem:
        raise DataError(f"{path}: {problem}")
    for key, kind in HEADER_TYPES.items():
        value = header.get(key)
        if not isinstance(value, kind) or (kind is int and (isinstance(value, bool) or value < 0)):
            raise DataError(f"{path}: '{key}' should be a {'non-negative ' if kind is int else ''}{kind.__name__}, "
                            f"found {value!r}")
    if header["dtype"] not in DTYPES:
        raise DataError(f"{path}: dtype {header['dtype']!r}; expected one of {', '.join(DTYPES)}")
    grid = header.get("grid")
    if not (grid is None or (isinstance(grid, list) and len(grid) == 2 and all(
            isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in grid))):
        raise DataError(f"{path}: grid {grid!r}; expected null or [regions, channels]")
    grid_size = header.get("grid_size")
    if not (grid_size is None or (isinstance(grid_size, int) and not isinstance(grid_size, bool) and grid_size > 0)):
        raise DataError(f"{path}: grid_size {grid_size!r}; expected a positive integer (cells a side), or no key")
    if header.get("regions") is not None:
        check_regions_header(path, header)
    return header


def check_regions_header(path: Path, header: dict) -> None:
    """`regions`: {"width": C, "max": most regions of an image, "total": T, "boxes": bool}, C the pooled width."""
    regions = header["regions"]
    counts = isinstance(regions, dict) and all(
        isinstance(regions.get(key), int) and not isinstance(regions[key], bool) and regions[key] > 0
        for key in ("width", "max", "total"))
    if not counts or not isinstance(regions.get("boxes"), bool) or regions["max"] > regions["total"]:
        raise DataError(f"{path}: regions {regions!r}; expected {{width, max, total: positive integers with max <= "
                        "total, boxes: true or false}")
    if regions["width"] != header["dim"]:
        raise DataError(f"{path}: regions of width {regions['width']} and pooled features of dim {header['dim']}; "
                        "expected the same width")


def read_index(store: Path, count: int) -> list[str]:
    """index.json's image ids: `count` distinct strings, row i holding ids[i]."""
    path = store / "index.json"
    index = read_json(path)
    if not isinstance(index, dict) or not isinstance(index.get("ids"), list) or not isinstance(index.get("paths"), list):
        raise DataError(f"{path}: expected an object with the lists 'ids' and 'paths'")
    ids = index["ids"]
    if len(ids) != count or len(index["paths"]) != count:
        raise DataError(f"{path}: {len(ids)} ids and {len(index['paths'])} paths for the {count} rows of header.json")
    if not all(isinstance(key, str) for key in ids) or len(set(ids)) != count:
        raise DataError(f"{path}: the ids must be distinct strings")
    return ids


def array_shapes(header: dict) -> dict[str, tuple[tuple[int, ...], str]]:
    """{file name: (shape, dtype)} of every array the header describes."""
    shapes = {"features.npy": ((header["count"], header["dim"]), header["dtype"]), "done.npy": ((header["count"],), "bool")}
    if header.get("grid") is not None:
        shapes["grid.npy"] = ((header["count"], *header["grid"]), header["dtype"])
    regions = header.get("regions")
    if regions is not None:
        shapes["regions.npy"] = ((regions["total"], regions["width"]), header["dtype"])
        shapes["offsets.npy"] = ((header["count"] + 1,), "int64")
        if regions["boxes"]:
            shapes["boxes.npy"] = ((regions["total"], 4), "float32")
    return shapes


def check_array(path: Path, shape: tuple[int, ...], dtype: str) -> None:
    """An .npy file holding exactly a C-order `shape` array of `dtype`, and nothing more or less."""
    if not path.is_file():
        raise DataError(f"{path}: missing; header.json describes a {shape} {dtype} array")
    try:
        with open(path, "rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version not in NPY_HEADERS:
                raise ValueError(f".npy format version {version}")
            found_shape, fortran, found_dtype = NPY_HEADERS[version](handle)
            offset = handle.tell()
    except (OSError, ValueError, SyntaxError, TypeError) as error:
        raise DataError(f"{path}: not a readable .npy array ({error})") from None
    if tuple(found_shape) != tuple(shape) or found_dtype != np.dtype(dtype) or fortran:
        raise DataError(f"{path}: holds a {tuple(found_shape)} {found_dtype} array{' in Fortran order' * fortran}; "
                        f"header.json says {tuple(shape)} {dtype}")
    expected, size = offset + int(np.prod(shape)) * np.dtype(dtype).itemsize, path.stat().st_size
    if size != expected:
        raise DataError(f"{path}: {size} bytes where header.json's {shape} {dtype} array takes {expected}: the file "
                        f"was {'truncated' if size < expected else 'extended'}; delete the store and extract again")


def check_arrays(store: Path, header: dict, names: tuple[str, ...]) -> None:
    for name, (shape, dtype) in array_shapes(header).items():
        if name in names:
            check_array(store / name, shape, dtype)


def read_offsets(store: Path, header: dict) -> np.ndarray:
    """offsets.npy of a region store, checked: from 0 to the header's total, every image at least one region and at
    most the header's max. -> (N + 1,) int64."""
    path, regions = store / "offsets.npy", header["regions"]
    check_array(path, (header["count"] + 1,), "int64")
    offsets = np.load(path)
    sizes = np.diff(offsets)
    empty, most, total = (np.flatnonzero(sizes < 1) + 1).tolist(), int(sizes.max(initial=0)), regions["total"]
    for broken, problem in (
            (offsets[0] != 0, f"starts at {offsets[0]}, not 0"),
            (offsets[-1] != total, f"ends at {offsets[-1]}, not at header.json's {total} regions"),
            (empty, f"not strictly increasing at entries {first_items(empty)} (every image has at least one region)"),
            (most != regions["max"], f"an image of {most} regions where header.json's max is {regions['max']}")):
        if broken:
            raise DataError(f"{path}: {problem}; delete the store and pack it again")
    return offsets


def reserve(path: Path) -> None:
    """Allocate the blocks of a freshly created (sparse) file now, so that a full disk fails here, named."""
    allocate = getattr(os, "posix_fallocate", None)
    if allocate is None:
        return
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        try:
            allocate(handle.fileno(), 0, size)
        except OSError as error:
            if error.errno in (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS):
                return  # a file system that cannot reserve: written as it goes, as before
            raise no_space(path, error, f" (needs {size} bytes)") from None


def chunk_rows(array: np.ndarray) -> int:
    row_bytes = max(1, int(np.prod(array.shape[1:])) * array.itemsize)
    return max(1, min(CHUNK_ROWS, CHUNK_BYTES // row_bytes))


def scan_rows(path: Path, ids: list[str], expected: dict | None = None, offsets: np.ndarray | None = None) -> dict:
    """One pass over a store array, chunk by chunk: rows with NaN or Inf are refused (naming rows and image ids;
    with `offsets`, rows are regions and an image owns rows offsets[i]:offsets[i+1]); with `expected`
    ({"rows", "sha256"}, from header.json) every chunk must match its checksum.
    -> {"rows": rows per chunk, "sha256": [one digest per chunk]}.

    A chunk that matches its recorded checksum holds the values that were found finite when the store was completed,
    so only the others are scanned again; chunks are hashed in two threads (hashing releases the GIL), straight from
    the memory map: verifying COCO's 24.7 GB grid store costs its read time, not three passes."""
    array = np.load(path, mmap_mode="r")
    rows = expected["rows"] if expected else chunk_rows(array)
    recorded = expected["sha256"] if expected else []

    def scan(start: int) -> tuple[str, list[int]]:
        block = array[start:start + rows]  # a C-contiguous view of the memory map
        digest = hashlib.sha256(block).hexdigest()
        chunk = start // rows
        if chunk < len(recorded) and recorded[chunk] == digest:
            return digest, []
        finite = np.isfinite(block.reshape(len(block), -1)).all(axis=1)
        return digest, (start + np.flatnonzero(~finite)).tolist()

    with ThreadPoolExecutor(max_workers=2) as pool:
        scanned = list(pool.map(scan, range(0, len(array), rows)))
    digests = [digest for digest, _ in scanned]
    non_finite = [row for _, bad_rows in scanned for row in bad_rows]
    if non_finite:
        images = non_finite if offsets is None else np.searchsorted(offsets, non_finite, side="right") - 1
        raise DataError(f"{path}: non-finite features (NaN or Inf) in rows {first_items(non_finite)} "
                        f"(image ids {first_items([ids[image] for image in dict.fromkeys(images)])})")
    if expected:
        bad = [chunk for chunk, digest in enumerate(digests) if chunk >= len(expected["sha256"])
               or expected["sha256"][chunk] != digest]
        if bad or len(digests) != len(expected["sha256"]):
            first = bad[0] * rows if bad else len(digests) * rows
            raise DataError(f"{path}: rows {first}-{min(first + rows, len(array)) - 1} do not match their checksum "
                            "in header.json (the file changed after extraction); delete the store and extract again")
    return {"rows": rows, "sha256": digests}


def checksums(store: Path, header: dict, ids: list[str], verify: bool) -> dict:
    """Every array's chunk checksums and index.json's sha256, checked against the header's when `verify`."""
    recorded = header.get("checksums")
    if verify and not (isinstance(recorded, dict) and isinstance(recorded.get("index.json"), str)):
        raise DataError(f"{store / 'header.json'}: no checksums (a store made by an older version); rerun "
                        "scripts/extract_features.py with the same settings to add them (nothing is encoded again)")
    found = {"index.json": sha256_of(store / "index.json")}
    if verify and found["index.json"] != recorded["index.json"]:
        raise DataError(f"{store / 'index.json'}: does not match its checksum in header.json (changed after "
                        "extraction); delete the store and extract again")
    offsets = read_offsets(store, header) if header.get("regions") is not None else None
    for name in array_shapes(header):
        if name != "done.npy":
            expected = recorded.get(name) if verify else None
            if verify and not (isinstance(expected, dict) and isinstance(expected.get("rows"), int)
                               and expected["rows"] > 0 and isinstance(expected.get("sha256"), list)):
                raise DataError(f"{store / 'header.json'}: checksums of {name} missing or malformed")
            found[name] = scan_rows(store / name, ids, expected, offsets if name in REGION_ROWS else None)
    return found
