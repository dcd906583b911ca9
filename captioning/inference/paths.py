"""Captioning a list of files for `scripts/caption.py`: print `path<TAB>caption`, skip unreadable files, write JSON."""
from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable

from captioning.data.images import ImageReadError
from captioning.inference.captioner import Caption


def chunks(items: list, size: int) -> Iterable[list]:
    for first in range(0, len(items), size):
        yield items[first:first + size]


def caption_paths(paths: list[Path], load: Callable[[Path], object], caption_batch: Callable[[list], list[Caption]],
                  *, batch_size: int, output: str | None, kind: str = "image") -> list[dict]:
    """Print `path<TAB>caption` per readable path; report unreadable ones on stderr and go on; optionally write JSON.

    `load` raises `ImageReadError` (clips: its subclass) for a file it cannot read; `kind` names the JSON key.
    """
    results, skipped = [], 0
    for batch in chunks(paths, batch_size):
        loaded = []
        for path in batch:
            try:
                loaded.append((path, load(path)))
            except ImageReadError as error:
                print(f"skipped {error}", file=sys.stderr, flush=True)
                skipped += 1
        if not loaded:
            continue
        for (path, _), caption in zip(loaded, caption_batch([item for _, item in loaded])):
            results.append({kind: str(path), **asdict(caption)})
            print(f"{path}\t{caption.caption}", flush=True)
    if skipped:
        print(f"{len(results)} {kind}s captioned, {skipped} skipped", file=sys.stderr)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(results, indent=2))
    return results
