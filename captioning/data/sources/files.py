"""What every source does with the files it reads: text and JSON read safely, and the values in them checked.

Each check raises a DataError naming where the value is (`file: images[3].id`), so a wrong type or a
hostile value in a data file stops the run with that place named instead of a traceback later on.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from captioning.data.records import DataError


def read_text(path: str | Path) -> str:
    """A UTF-8 text file's content, without a leading byte-order mark (a BOM would glue itself to the first name)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text ({error})") from error
    except OSError as error:
        raise DataError(f"{path}: cannot be read ({error})") from error


def read_json(path: str | Path) -> dict | list:
    """A JSON file's content; a missing, malformed or non-UTF-8 file is a DataError naming it."""
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: malformed JSON ({error})") from error
    except RecursionError as error:
        raise DataError(f"{path}: JSON nested too deeply to read") from error


def describe(value: Any) -> str:
    """A value as a user would recognise it in their JSON file."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    kind = {list: "a list", dict: "an object", str: "the string", float: "the number"}.get(type(value), type(value).__name__)
    shown = repr(value)
    return f"{kind} {shown[:60] + '...' if len(shown) > 60 else shown}"


def entry(value: Any, keys: tuple[str, ...], where: str) -> dict:
    """A JSON object holding `keys`."""
    if not isinstance(value, dict):
        raise DataError(f"{where}: expected an object with {list(keys)}, found {describe(value)}")
    missing = [key for key in keys if key not in value]
    if missing:
        raise DataError(f"{where}: missing key(s) {missing}")
    return value


def list_of(value: Any, where: str) -> list:
    if not isinstance(value, list):
        raise DataError(f"{where}: expected a list, found {describe(value)}")
    return value


def record_id(value: Any, where: str) -> int | str:
    """An image or clip id: a whole number or a non-empty string (not null, a list, a fraction or true/false)."""
    if (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, str) and value.strip()):
        return value
    raise DataError(f"{where}: an id must be a whole number or a non-empty string, found {describe(value)}")


def text(value: Any, where: str) -> str:
    """A caption or a name: a string, not a number, a list or null."""
    if not isinstance(value, str):
        raise DataError(f"{where}: expected a string, found {describe(value)}")
    return value


def file_in(root: Path, name: Any, where: str, allow_outside_root: bool = False) -> Path:
    """`root / name` for a file name read from a data file; a name that leaves `root` (`../x.jpg`, an absolute
    path) is refused unless `allow_outside_root` (data.allow_outside_root), since a data file should only name
    files under the folder the user gave."""
    name = text(name, where)
    if not name.strip() or "\0" in name:
        raise DataError(f"{where}: not a usable file name: {name!r}")
    parts = os.path.normpath(name).replace("\\", "/").split("/")
    if not allow_outside_root and (os.path.isabs(name) or name.startswith(("/", "\\")) or parts[0] == ".."):
        raise DataError(f"{where}: {name!r} is outside the image folder {root} "
                        "(set data.allow_outside_root=true if that is meant)")
    return root / name


def sort_ids(ids: list, where: str) -> list:
    """Ids in order; numbers and strings mixed in one file are an error (they cannot be ordered, and they
    usually mean a file written by two different tools)."""
    kinds = {type(value) for value in ids}
    if len(kinds) > 1:
        number = next(value for value in ids if isinstance(value, int))
        string = next(value for value in ids if isinstance(value, str))
        raise DataError(f"{where}: ids mix numbers and strings (e.g. {number!r} and {string!r})")
    return sorted(ids)
