"""How a schema field says what its value may be, and the check of a composed config against a schema.

A field's annotation gives its type (int, float, bool, str, an Enum for a closed set, list[...], Optional[...],
a nested schema); `option(...)` adds what a type cannot say (a range, a path, a file that must exist, a device).
`check_node` walks a config against its schema and raises `OptionError` with one line that names the key, the
value and what is allowed: `train.grad_clip=-1: expected a number > 0 or null`.

The check is ours, not OmegaConf's: composition stays untyped (a bad override reaches this check, which names
it in one line, instead of failing inside Hydra), and ints stay ints (OmegaConf would turn `'5'` into 5).
"""
from __future__ import annotations

import dataclasses
import enum
import math
import re
import shutil
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any


class OptionError(ValueError):
    """A config value of the wrong type or outside its allowed values, or a mandatory value left unset."""


@dataclass(frozen=True)
class Option:
    expected: str                    # what is allowed, as the error message says it
    accepts: Callable[[Any], bool]   # on the resolved value as plain data (lists, not ListConfig)


def show(value: Any) -> str:
    """A value as it would be written on the command line (strings quoted, so `'3'` is not mistaken for 3)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def in_range(value: float, ge: float | None, gt: float | None, le: float | None, lt: float | None) -> bool:
    return ((ge is None or value >= ge) and (gt is None or value > gt) and (le is None or value <= le)
            and (lt is None or value < lt))


def bounds(integer: bool, ge: Any, gt: Any, le: Any, lt: Any) -> str:
    if integer and ge is not None and le is not None:
        return f" in {ge}..{le}"
    if ge is not None and (le is not None or lt is not None):
        return f" in [{ge}, {le if le is not None else lt}{']' if le is not None else ')'}"
    if gt is not None and (le is not None or lt is not None):
        return f" in ({gt}, {le if le is not None else lt}{']' if le is not None else ')'}"
    return f" > {gt}" if gt is not None else f" >= {ge}" if ge is not None else ""


KINDS = {  # str fields with more to say than "a string"
    "text": Option("a string", lambda v: isinstance(v, str) and v != ""),
    "path": Option("a path", lambda v: isinstance(v, str) and v != ""),
    "file": Option("an existing file", lambda v: isinstance(v, str) and Path(v).is_file()),
    "device": Option("auto | cpu | cuda | cuda:N",
                     lambda v: isinstance(v, str) and bool(re.fullmatch(r"auto|cpu|cuda(:\d+)?", v))),
    "java": Option("auto | none | a java executable (a path, or a name on PATH)",
                   lambda v: isinstance(v, str) and (v in ("auto", "none") or shutil.which(v) is not None)),
}


def option(*, ge: float | None = None, gt: float | None = None, le: float | None = None, lt: float | None = None,
           kind: str = "text", items: str = "", empty: bool = False, spec: bool = False, source: bool = False,
           accepts: Option | None = None) -> Any:
    """A schema field with no default (the YAML gives it) and what its annotation cannot say: a range, the kind of
    a string (KINDS), the plural name of a list's items and whether [] is allowed, `spec=True` for a component
    spec its registry checks, `source=True` for a data key that is an argument of the data source (config/data.py),
    or an explicit `accepts` for a value of two shapes (a file or a list of files)."""
    return field(default=MISSING, metadata=dict(ge=ge, gt=gt, le=le, lt=lt, kind=kind, items=items, empty=empty,
                                                spec=spec, source=source, accepts=accepts))


def nullable(inner: Option) -> Option:
    return Option(f"{inner.expected} or null", lambda v: v is None or inner.accepts(v))


def one_of(*choices: Any) -> Option:
    """A closed set; `True` and 1 are different values here."""
    return Option(f"one of {' | '.join(c if isinstance(c, str) else show(c) for c in choices)}",
                  lambda v: any(type(v) is type(c) and v == c for c in choices))


def list_of(item: Option, what: str, empty: bool = False) -> Option:
    """A list of `item`s; `empty`: [] is allowed too (a list of things to run, where [] runs none)."""
    return Option(f"a {'' if empty else 'non-empty '}list of {what}",
                  lambda v: isinstance(v, list) and (empty or bool(v)) and all(map(item.accepts, v)))


def any_of(*options: Option) -> Option:
    return Option(" or ".join(o.expected for o in options), lambda v: any(o.accepts(v) for o in options))


def option_of(annotation: Any, meta: dict) -> Option:
    """The Option a field's annotation and `option(...)` metadata describe."""
    if meta.get("accepts") is not None:
        return meta["accepts"]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        members = [member for member in typing.get_args(annotation) if member is not type(None)]
        return nullable(option_of(members[0], meta))
    if typing.get_origin(annotation) is list:
        item = option_of(typing.get_args(annotation)[0], {**meta, "accepts": None})
        return list_of(item, meta.get("items") or "values", meta.get("empty", False))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return one_of(*(member.value for member in annotation))
    ge, gt, le, lt = (meta.get(key) for key in ("ge", "gt", "le", "lt"))
    if annotation is bool:
        return Option("true or false", lambda v: isinstance(v, bool))
    if annotation is int:
        return Option(f"an integer{bounds(True, ge, gt, le, lt)}", lambda v: is_int(v) and in_range(v, ge, gt, le, lt))
    if annotation is float:
        return Option(f"a number{bounds(False, ge, gt, le, lt)}",
                      lambda v: is_number(v) and in_range(v, ge, gt, le, lt))
    if annotation is str:
        return KINDS[meta.get("kind") or "text"]
    raise TypeError(f"no option type for the annotation {annotation!r}")


# ---------------------------------------------------------------- the walk


def schema_of(annotation: Any) -> type | None:
    """The nested schema a field holds (a dataclass, possibly Optional), or None."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [schema_of(member) for member in typing.get_args(annotation)]
        return next((schema for schema in found if schema is not None), None)
    return annotation if dataclasses.is_dataclass(annotation) else None


def check_node(node: dict, schema: type, prefix: str = "") -> None:
    """Check plain data `node` (a composed config, resolved) against `schema`: every key a field (the root of an
    entry point may hold an experiment's own inputs, checked where they are used), every value of its type. A field
    the composition leaves out is skipped: a field's default lives in the YAML, and some configs leave keys out."""
    hints = typing.get_type_hints(schema)
    fields = {f.name: f for f in dataclasses.fields(schema)}
    for name, value in node.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if name not in fields:
            if prefix:
                raise OptionError(f"{key}: not an option here; expected one of {', '.join(fields)}")
            continue
        meta, annotation = dict(fields[name].metadata), hints[name]
        nested = schema_of(annotation)
        if meta.get("spec"):
            continue  # a component spec: its registry checks it (validate)
        if nested is not None and (value is not None or annotation is nested):
            if not isinstance(value, dict):
                raise OptionError(f"{key}={show(value)}: expected a mapping of {', '.join(map(str, nested.__dataclass_fields__))}")
            check_node(value, nested, key)
            continue
        allowed = option_of(annotation, meta) if nested is None else Option("null", lambda v: v is None)
        if not allowed.accepts(value):
            raise OptionError(f"{key}={show(value)}: expected {allowed.expected}")
