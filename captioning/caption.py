"""`caption_images(cfg) -> results`: the work of `scripts/caption.py`, callable from tests alike."""
from __future__ import annotations

import glob
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

from captioning.data.images import ImageReadError, load_rgb
from captioning.inference import Captioner

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


def caption_images(cfg: DictConfig) -> list[dict]:
    """Print `path<TAB>caption` per image; report unreadable files on stderr and go on; optionally write JSON."""
    captioner = Captioner.from_checkpoint(cfg.checkpoint, device=cfg.device)
    decode = OmegaConf.to_container(cfg.decode, resolve=True)
    images = OmegaConf.to_container(cfg.images) if OmegaConf.is_list(cfg.images) else str(cfg.images)
    results, skipped = [], 0
    for paths in chunks(find_images(images), cfg.batch_size):
        loaded = []
        for path in paths:
            try:
                loaded.append((path, load_rgb(path)))
            except ImageReadError as error:
                print(f"skipped {error}", file=sys.stderr, flush=True)
                skipped += 1
        if not loaded:
            continue
        captions = captioner.caption([image for _, image in loaded], batch_size=len(loaded), **decode)
        for (path, _), caption in zip(loaded, captions):
            results.append({"image": str(path), **asdict(caption)})
            print(f"{path}\t{caption.caption}", flush=True)
    if skipped:
        print(f"{len(results)} images captioned, {skipped} skipped", file=sys.stderr)
    if cfg.output:
        Path(cfg.output).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.output).write_text(json.dumps(results, indent=2))
    return results
