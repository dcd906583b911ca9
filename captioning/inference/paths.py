"""Captioning a list of files for `scripts/caption.py`: print `path<TAB>caption`, skip unreadable files, write JSON
(never over one of the inputs, nor over a file caption.py did not write unless `overwrite=true`)."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable

from captioning.config import OptionError
from captioning.data.images import ImageReadError
from captioning.inference.captioner import Caption


def chunks(items: list, size: int) -> Iterable[list]:
    for first in range(0, len(items), size):
        yield items[first:first + size]


def written_by_caption(path: Path) -> bool:
    """A JSON list of {image or clip, caption, ...} rows, as `caption_paths` writes (an empty list too)."""
    try:
        with open(path, "rb") as file:
            if file.read(64).lstrip()[:1] != b"[":
                return False
        rows = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(rows, list) and all(isinstance(row, dict) and "caption" in row and ("image" in row or "clip" in row)
                                          for row in rows)


def same_file(a: Path, b: Path) -> bool:
    """The same file, also through a symbolic or hard link."""
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def check_output(output: str, inputs: list[Path], overwrite: bool) -> list[Path]:
    """Refuse (before any captioning) an output that is one of the inputs, a folder, not writable, or an existing
    file caption.py did not write (allowed with `overwrite`). An earlier output of ours found among the inputs (a
    folder that was captioned into) is no input: it is dropped from them and replaced."""
    target = Path(output).expanduser()
    ours = target.is_file() and written_by_caption(target)
    clashes = [path for path in inputs if same_file(path, target)]
    if clashes and not ours:
        raise OptionError(f"output={output!r}: that is {clashes[0]}, one of the inputs being captioned; "
                          "write the JSON to another file")
    if target.is_dir():
        raise OptionError(f"output={output!r}: a folder; give the path of a JSON file")
    folder = next(parent for parent in target.absolute().parents if parent.exists())
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise OptionError(f"output={output!r}: cannot write under {folder} (" +
                          ("a file, not a folder)" if not folder.is_dir() else "no write permission)"))
    if target.exists() and not ours:
        if not overwrite:
            raise OptionError(f"output={output!r}: the file exists and was not written by caption.py; give "
                              "overwrite=true to replace it, or another output")
        print(f"replacing {target} (overwrite=true)", file=sys.stderr)
    return [path for path in inputs if path not in clashes]


def write_json(rows: list[dict], output: str) -> None:
    """Write through a temporary file: the previous output survives a kill or a full disk."""
    target = Path(output).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(rows, indent=2))
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)


def caption_paths(paths: list[Path], load: Callable[[Path], object], caption_batch: Callable[[list], list[Caption]],
                  *, batch_size: int, output: str | None, kind: str = "image", overwrite: bool = False,
                  after: Callable[[Path, Caption], object] | None = None) -> list[dict]:
    """Print `path<TAB>caption` per readable path; report unreadable ones on stderr and go on; optionally write JSON.

    `load` raises `ImageReadError` (clips: its subclass) for a file it cannot read; `kind` names the JSON key.
    `output` is checked before anything is captioned (`check_output`); `overwrite`: replace a file of another origin.
    `after(path, caption)` runs for each caption (attention maps).
    """
    if output:
        paths = check_output(output, paths, overwrite)
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
        for (path, _), caption in zip(loaded, caption_batch([item for _, item in loaded]), strict=True):
            results.append({kind: str(path), **{key: value for key, value in asdict(caption).items()
                                                 if value is not None}})
            print(f"{path}\t{caption.caption}", flush=True)
            if after is not None:
                after(path, caption)
    if skipped:
        print(f"{len(results)} {kind}s captioned, {skipped} skipped", file=sys.stderr)
    if output:
        write_json(results, output)
    return results
