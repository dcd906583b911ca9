"""The option types: what a value of an option may be (`integer(1)`, `one_of("a", "b")`, ...) and the error that
names a refused one. The tables (option_tables.py) and the check (options.py) are built from these."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
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


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _nullable(option: Option, null: bool) -> Option:
    return Option(f"{option.expected} or null", lambda v: v is None or option.accepts(v)) if null else option


def integer(low: int | None = None, high: int | None = None, null: bool = False) -> Option:
    bound = f" in {low}..{high}" if high is not None else f" >= {low}" if low is not None else ""
    return _nullable(Option(f"an integer{bound}", lambda v: _is_int(v) and (low is None or v >= low)
                            and (high is None or v <= high)), null)


def number(low: float | None = None, above: float | None = None, null: bool = False) -> Option:
    """A finite int or float (not a bool); `low` is inclusive, `above` exclusive."""
    bound = f" > {above}" if above is not None else f" >= {low}" if low is not None else ""
    return _nullable(Option(f"a number{bound}", lambda v: _is_number(v) and (low is None or v >= low)
                            and (above is None or v > above)), null)


def text() -> Option:
    return Option("a string", lambda v: isinstance(v, str) and v != "")


def path(null: bool = False) -> Option:
    return _nullable(Option("a path", lambda v: isinstance(v, str) and v != ""), null)


def existing_file(null: bool = False) -> Option:
    return _nullable(Option("an existing file", lambda v: isinstance(v, str) and Path(v).is_file()), null)


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
