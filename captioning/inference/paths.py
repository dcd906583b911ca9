"""Captioning a list of files for `scripts/caption.py`: print `path<TAB>caption`, skip unreadable files, write JSON
marked as ours (never over one of the inputs, nor over a file caption.py did not mark unless `overwrite=true`)."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable

from tqdm import tqdm

from captioning.config import OptionError
from captioning.data.images import ImageReadError
from captioning.data.records import record_size_error
from captioning.inference.captioner import Caption


def chunks(items: list, size: int, desc: str | None = None) -> Iterable[list]:
    """`items` `size` at a time; with `desc`, a progress bar on stderr when there is more than one batch."""
    starts = range(0, len(items), size)
    for first in tqdm(starts, desc=desc, leave=False, dynamic_ncols=True, disable=desc is None or len(starts) < 2):
        yield items[first:first + size]


WRITTEN_BY = "captioning-caption"  # the mark of caption.py's JSON: {"written_by": WRITTEN_BY, "captions": [rows]}


def output_origin(path: Path) -> str:
    """Who wrote the JSON file at `path`: "ours" (it carries our mark), "older" (a list of {image or clip, caption}
    rows, the unmarked output of caption.py before the mark, which anyone could also have written) or "other"."""
    try:
        with open(path, "rb") as file:
            start = file.read(64).lstrip()[:1]
        if start not in (b"{", b"[") or record_size_error(path) is not None:
            return "other"
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return "other"
    if isinstance(content, dict) and content.get("written_by") == WRITTEN_BY:
        return "ours"
    if isinstance(content, list) and all(isinstance(row, dict) and "caption" in row and ("image" in row or "clip" in row)
                                         for row in content):
        return "older"
    return "other"


def same_file(a: Path, b: Path) -> bool:
    """The same file, also through a symbolic or hard link."""
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False


def file_keys(path: Path) -> set:
    """What makes `path` one file: its real path, and its device and inode when it exists (hard links)."""
    keys: set = {os.path.realpath(path)}
    try:
        status = os.stat(path)
        keys.add((status.st_dev, status.st_ino))
    except OSError:
        pass
    return keys


def check_output(output: str, inputs: list[Path], overwrite: bool) -> list[Path]:
    """Refuse (before any captioning) an output that is one of the inputs, a folder, not writable, or an existing
    file caption.py did not write (allowed with `overwrite`). An earlier output of ours found among the inputs (a
    folder that was captioned into) is no input: it is dropped from them and replaced."""
    target = Path(output).expanduser()
    origin = output_origin(target) if target.is_file() else None
    ours = origin == "ours"
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
        if not overwrite and origin == "older":
            raise OptionError(f"output={output!r}: the file exists without the mark caption.py writes "
                              f"(\"written_by\": \"{WRITTEN_BY}\"); a list of captions like it may be an older "
                              "caption.py output or anyone's file, so it is kept; give overwrite=true to replace it, "
                              "or another output")
        if not overwrite:
            raise OptionError(f"output={output!r}: the file exists and was not written by caption.py; give "
                              "overwrite=true to replace it, or another output")
        print(f"replacing {target} (overwrite=true)", file=sys.stderr)
    return [path for path in inputs if path not in clashes]


def write_json(rows: list[dict], output: str) -> None:
    """Write `{"written_by": WRITTEN_BY, "captions": rows}` (the mark lets a later run know the file is ours) through
    a temporary file: the previous output survives a kill or a full disk."""
    target = Path(output).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps({"written_by": WRITTEN_BY, "captions": rows}, indent=2))
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
    for batch in chunks(paths, batch_size, desc=f"captioning {kind}s"):
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
