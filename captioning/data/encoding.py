"""The one pass of a frozen encoder over a run's inputs (images or clips), batch by batch: into a feature store
(`data/features.py`) or into tensors held for one run (`cache_features`)."""
from __future__ import annotations

from typing import Any, Callable, Iterator

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from captioning.data.batches import Clips
from captioning.execution import autocast


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
                desc: str = "encoding", prepare: Callable[[Any, torch.device], Any] | None = None
                ) -> Iterator[tuple[torch.Tensor, Any]]:
    """The one pass of a frozen encoder over inputs: yields (rows (b,), encoder output) batch by batch.

    `load(row)` gives one input (an image tensor or a clip), `stack` batches them; the output is the
    encoder's (`Features` for images, `Clips` of per-frame features for clips). `prepare(batch, device)` makes
    the encoder's input on the device (default: `batch.to(device)`; device-side JPEG decoding: `device_decode`).
    """
    encoder.eval().to(device)
    loader = DataLoader(_Rows(rows, load), batch_size=batch_size, num_workers=num_workers, collate_fn=_Stack(stack),
                        pin_memory=device.type == "cuda")
    for batch_rows, batch in tqdm(loader, desc=desc, leave=False, dynamic_ncols=True):
        inputs = prepare(batch, device) if prepare is not None else batch.to(device, non_blocking=True)
        with autocast(device, amp_dtype):
            yield batch_rows, encoder(inputs)


def cache_features(encoder: torch.nn.Module, load: Callable[[int], Any], count: int, grid: bool = False,
                   **options) -> dict[str, torch.Tensor]:
    """Encode every input once for the run -> float32 tensors on the CPU, row = record index:
    {"pooled": (N, D)} for images, with "grid": (N, h * w, C) when `grid` (attention decoders),
    {"frames": (N, T, D), "mask": (N, T)} for clips (`encode_rows` options)."""
    table: dict[str, torch.Tensor] = {}
    for rows, out in encode_rows(encoder, load, list(range(count)), **options):
        if isinstance(out, Clips):
            parts = {"frames": out.frames.float(), "mask": out.mask}
        else:
            parts = {"pooled": out.pooled.float(), **({"grid": out.grid.float()} if grid else {})}
        for name, value in parts.items():
            if name not in table:
                table[name] = torch.zeros(count, *value.shape[1:], dtype=value.dtype)
            table[name][rows] = value.cpu()
    return table
