"""`caption_images(cfg) -> results`: the work of `scripts/caption.py`, callable from tests alike."""
from __future__ import annotations

import glob
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

from captioning.data.images import ImageReadError, load_rgb
from captioning.inference import Caption, Captioner

GLOB_CHARACTERS = set("*?[")


def find_images(spec: str | Sequence[str]) -> list[Path]:
    """A file, a folder (every non-hidden file in it, sorted), a glob, or a list of these -> paths.

    Nothing is filtered by extension: a file that is not an image is reported when it fails to open.
    """
    if not isinstance(spec, str):
        return [path for item in spec for path in find_images(str(item))]
    if GLOB_CHARACTERS & set(spec):
        matches = sorted(Path(p) for p in glob.glob(str(Path(spec).expanduser()), recursive=True))
        return [p for p in matches if p.is_file()] or [Path(spec)]  # no match: reported as missing
    path = Path(spec).expanduser()
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    return [path]


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


def caption_images(cfg: DictConfig) -> list[dict]:
    """`conf/caption.yaml` for an image captioner: every image `images=` names."""
    captioner = Captioner.from_checkpoint(cfg.checkpoint, device=cfg.device)
    decode = OmegaConf.to_container(cfg.decode, resolve=True)
    images = OmegaConf.to_container(cfg.images) if OmegaConf.is_list(cfg.images) else str(cfg.images)
    return caption_paths(find_images(images), load_rgb,
                         lambda batch: captioner.caption(batch, batch_size=len(batch), **decode),
                         batch_size=cfg.batch_size, output=cfg.output)
