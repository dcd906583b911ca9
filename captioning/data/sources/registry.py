"""The data source registry, and what every multi-split source does: read each split it is given."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from captioning.data.records import DataError
from captioning.registry import Registry

SOURCES = Registry("data source")


def require_keys(mapping: dict, keys: tuple[str, ...], where: str) -> None:
    """A DataError naming `where` and the keys it lacks."""
    missing = [key for key in keys if key not in mapping]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}")


def read_splits(given: dict[str, dict | None], keys: tuple[str, ...], read: Callable[[str, dict], list]) -> dict[str, list]:
    """{split: its files (a mapping with `keys`) or None} -> {split: read(split, files)} for the splits given."""
    splits = {}
    for split, files in given.items():
        if files:
            if not isinstance(files, dict):
                raise DataError(f"data.{split}: expected a mapping with {list(keys)}, found {type(files).__name__}")
            require_keys(files, keys, f"data.{split}")
            for key in keys:
                if not isinstance(files[key], (str, Path)):
                    raise DataError(f"data.{split}.{key}: expected a path, found {files[key]!r}")
            splits[split] = read(split, files)
    return splits
