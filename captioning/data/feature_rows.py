"""Reading a feature store's rows as batches need them, and choosing between that and a table in memory.

At COCO size a frozen ResNet-101's 7 x 7 grids are 22.7 GB in float16 (91 GB at 14 x 14): more than a 24 GB machine
or an 80 GB card holds next to a model. `StoreRows` reads each batch's rows from the store's memory maps (in row
order, for locality), so memory stays at a batch while the kernel's page cache, which it can drop, holds the rest.
`placement` decides per run: the whole table in memory when it fits (the fast path), streamed otherwise.
"""
from __future__ import annotations

import os
import queue
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np
import torch

from captioning.config.choices import Auto
from captioning.data.batches import Features
from captioning.data.records import DataError

MODES = tuple(member.value for member in Auto)  # data.features_in_memory
MEMORY_SHARE = 0.5  # auto keeps a table in memory when it takes at most this share of the free memory


class StoreRows:
    """The features of a list of records, row i for record i, read from a store's arrays on demand.

    pooled (R, D) and grid (R, N, C) are the store's arrays (memory maps, or arrays in RAM), `rows` (n,) the
    store row of each record. Variable-size region stores give grid as (T, C) with `offsets` (R + 1,): the regions
    of store row r are grid[offsets[r]:offsets[r + 1]], padded per batch to its largest count, with a mask.
    A batch is what an in-memory table gives: pooled float32, grid in the store's dtype.
    """

    def __init__(self, pooled: np.ndarray, rows: np.ndarray, grid: np.ndarray | None = None,
                 offsets: np.ndarray | None = None):
        self.pooled, self.rows, self.grid, self.offsets = pooled, np.asarray(rows, dtype=np.int64), grid, offsets

    def __len__(self) -> int:
        return len(self.rows)

    def read(self, records: torch.Tensor | np.ndarray) -> torch.Tensor | Features:
        """records (B,) indices into this list -> pooled (B, D), or Features with grids (and masks for regions)."""
        rows = self.rows[np.asarray(records, dtype=np.int64)]
        order = np.argsort(rows, kind="stable")  # store order: the memory map is read front to back
        back = np.argsort(order, kind="stable")
        ordered = rows[order]
        pooled = torch.from_numpy(self.pooled[ordered].astype(np.float32)[back])
        if self.grid is None:
            return pooled
        if self.offsets is None:
            return Features(pooled, torch.from_numpy(self.grid[ordered][back]))
        regions = {i: torch.from_numpy(np.array(self.grid[self.offsets[rows[i]]:self.offsets[rows[i] + 1]]))
                   for i in order.tolist()}  # read in store order, then put in record order
        grids = [regions[i] for i in range(len(rows))]
        real = [torch.ones(len(grid), dtype=torch.bool) for grid in grids]  # every batch of regions has a mask
        return Features.padded(pooled, grids, real)

    def item(self, index: int) -> torch.Tensor | Features:
        """One record's features (pooled (D,), grid (N, C)): `CaptionDataset`'s per-item lookup."""
        batch = self.read(np.array([index]))
        return batch[0] if isinstance(batch, torch.Tensor) else Features(batch.pooled[0], batch.grid[0])

    def in_memory(self) -> "StoreRows":
        """The same rows copied out of the memory maps into RAM (only the rows these records use)."""
        rows = np.unique(self.rows)
        local = np.searchsorted(rows, self.rows)
        if self.offsets is None:
            grid = None if self.grid is None else np.ascontiguousarray(self.grid[rows])
            return StoreRows(np.ascontiguousarray(self.pooled[rows]), local, grid)
        counts = self.offsets[rows + 1] - self.offsets[rows]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        grid = np.concatenate([self.grid[self.offsets[r]:self.offsets[r + 1]] for r in rows.tolist()])
        return StoreRows(np.ascontiguousarray(self.pooled[rows]), local, grid, offsets)

    def nbytes(self) -> int:
        """The bytes these records' rows take in memory (each distinct row once)."""
        rows = np.unique(self.rows)
        total = len(rows) * self.pooled.shape[1] * 4  # pooled vectors are kept as float32
        if self.grid is not None:  # cells (R, N, C) or regions (T, C) of grid.shape[-1] channels each
            cells = (len(rows) * self.grid.shape[1] if self.offsets is None
                     else int((self.offsets[rows + 1] - self.offsets[rows]).sum()))
            total += cells * self.grid.shape[-1] * self.grid.itemsize
        return total


def item_reader(table: Any, cached: bool) -> Callable[[int], Any]:
    """`CaptionDataset`'s per-item input: a loader of images or clips as it is, else one record's cached features
    from `StoreRows` or from a table ({"pooled", "grid"} or, for clips, {"frames", "mask"})."""
    if not cached:
        return table
    if isinstance(table, StoreRows):
        return table.item
    if "grid" in table:
        return lambda i: Features(table["pooled"][i], table["grid"][i])
    return table["pooled"].__getitem__ if "pooled" in table else lambda i: (table["frames"][i], table["mask"][i])


def available_memory() -> int:
    """Bytes the kernel can still give this process without swapping (MemAvailable), or, failing that, free RAM."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def available_device_memory(device: torch.device) -> int | None:
    """Free bytes on a CUDA device; None elsewhere (the table stays in RAM)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free


@dataclass
class Placement:
    in_memory: bool
    reason: str


def gb(size: int) -> str:
    """Bytes as people read them: 22.70 GB, 4.1 MB."""
    return f"{size / 1e9:.2f} GB" if size >= 1e9 else f"{size / 1e6:.1f} MB"


def placement(mode: Any, needed: int, device: torch.device, store: str) -> Placement:
    """Where a run's features live: `data.features_in_memory` = auto | true | false against the bytes `needed`.

    auto keeps the table in memory when it takes at most half the free RAM (and, on CUDA, half the free device
    memory, where the table goes); true refuses, before training, a table that cannot fit at all."""
    if mode not in MODES:
        raise DataError(f"data.features_in_memory must be auto, true or false, got {mode!r}")
    ram, device_free = available_memory(), available_device_memory(device)
    sizes = f"{store} needs {gb(needed)}; {gb(ram)} of RAM free" + (
        f", {gb(device_free)} free on {device}" if device_free is not None else "")
    fits = needed <= ram and (device_free is None or needed <= device_free)
    if mode is False:
        return Placement(False, f"data.features_in_memory=false ({sizes})")
    if mode is True:
        if not fits:
            raise DataError(f"data.features_in_memory=true: the features do not fit in memory ({sizes}); set "
                            "data.features_in_memory=auto or false to read them from the store as batches need them")
        return Placement(True, f"data.features_in_memory=true ({sizes})")
    comfortable = needed <= MEMORY_SHARE * ram and (device_free is None or needed <= MEMORY_SHARE * device_free)
    share = f"{MEMORY_SHARE:.0%} of the free memory"
    return Placement(comfortable, f"data.features_in_memory=auto: {sizes}; "
                                  f"{'within' if comfortable else 'more than'} {share}")


def prefetched(batches: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """`batches` produced `depth` ahead by a background thread (reading a memory map releases the GIL), errors
    re-raised here; the thread stops when the consumer stops early."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop, done = threading.Event(), object()

    def offer(item: Any) -> bool:
        """Put `item` in the queue unless the consumer stops first; -> whether it went in."""
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not offer(batch):
                    return
            item = done
        except BaseException as error:  # noqa: B036 - handed to the consumer, which raises it
            item = error
        offer(item)

    thread = threading.Thread(target=produce, name="feature-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()
