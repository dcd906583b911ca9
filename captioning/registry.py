"""Name -> constructor registries, and the check that a spec read from a file names only registered code.

A spec is `{"name": registered name, **arguments}`. Specs come from trusted Hydra configs and from
untrusted files (checkpoints, saved data configs, feature-store headers); both go through `check`,
so nothing read from a file can choose the code that runs: the name must be registered, every
argument must be a parameter of that constructor, and every value must be plain JSON data
(None, bool, int, float, str, and lists or string-keyed dicts of them) without a `_target_` key.
An argument whose parameter has a simple annotation (int, float, bool, str, a path, or a union of these
with None) must have that type: `model.decoder.hidden_size: expected an int, found 'abc'`.
"""
from __future__ import annotations

import functools
import inspect
import types
import typing
from pathlib import Path
from typing import Any, Callable

PLAIN_SCALARS = (type(None), bool, int, float, str)
# The annotations an argument is checked against, with what a value of each looks like in a spec
# (ints are numbers, bools are not ints, a path is given as a string).
SIMPLE_TYPES = {int: "an int", float: "a number", bool: "a bool", str: "a string", Path: "a string",
                type(None): "null"}


def plain(node: Any) -> Any:
    """A Hydra/OmegaConf config node as plain Python data (resolved); anything else as it is."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


class SpecError(ValueError):
    """A spec that names an unregistered component, an unknown argument, or a value that is not plain data."""


def _fits(value: Any, annotation: type) -> bool:
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, str)  # str, Path


@functools.cache
def simple_annotations(constructor: Callable) -> dict[str, tuple[type, ...]]:
    """{parameter: the types its annotation admits} for each parameter annotated with SIMPLE_TYPES (or a union
    of them); parameters with any other annotation, or none, are not listed (their values are not type-checked)."""
    try:
        hints = typing.get_type_hints(constructor.__init__ if inspect.isclass(constructor) else constructor)
    except (NameError, TypeError, AttributeError):  # an annotation that does not evaluate: no type checks
        return {}
    simple = {}
    for name, hint in hints.items():
        members = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
        if name != "return" and all(member in SIMPLE_TYPES for member in members):
            simple[name] = members
    return simple


def wrong_type(value: Any, admitted: tuple[type, ...], key: str) -> str | None:
    """`key: expected an int, found 'abc'` when `value` fits none of the `admitted` types; None when it fits."""
    if any(_fits(value, annotation) for annotation in admitted):
        return None
    expected = " or ".join(dict.fromkeys(SIMPLE_TYPES[annotation] for annotation in admitted))
    return f"{key}: expected {expected}, found {value!r}"


def find_code_reference(value: Any, key: str) -> str | None:
    """The dotted key of the first `_target_` / non-plain value inside `value`, with a reason; None if it is plain."""
    if isinstance(value, PLAIN_SCALARS):
        return None
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = find_code_reference(item, f"{key}[{index}]")
            if found:
                return found
        return None
    if isinstance(value, dict):
        for name, item in value.items():
            if not isinstance(name, str):
                return f"{key}: a non-string key {name!r}"
            if name in ("_target_", "_partial_", "_args_"):
                return f"{key}.{name}: names code to call ({str(item)[:80]!r}); files may only name registered components"
            found = find_code_reference(item, f"{key}.{name}")
            if found:
                return found
        return None
    return f"{key}: a {type(value).__name__}, not plain data (numbers, strings, lists)"


class Registry:
    """One kind of component (encoder, decoder, data source, task): `@REGISTRY.register("name")` on a constructor."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        def add(constructor: Callable) -> Callable:
            if name in self._entries and self._entries[name] is not constructor:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = constructor
            return constructor
        return add

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries

    def get(self, name: Any, where: str = "") -> Callable:
        if not isinstance(name, str) or name not in self._entries:
            raise SpecError(f"{where}: unknown {self.kind} {name!r}; registered: {', '.join(self.names())}")
        return self._entries[name]

    def check(self, spec: Any, where: str, supplied: tuple[str, ...] = ()) -> tuple[str, dict]:
        """Validate `{"name": ..., **arguments}` -> (name, arguments); `supplied` are arguments the caller adds."""
        if not isinstance(spec, dict):
            raise SpecError(f"{where}: expected a mapping with a 'name', found {type(spec).__name__}")
        problem = find_code_reference(spec, where)
        if problem:
            raise SpecError(problem)
        if "name" not in spec:
            raise SpecError(f"{where}: no 'name' (one of: {', '.join(self.names())})")
        arguments = {key: value for key, value in spec.items() if key != "name"}
        constructor = self.get(spec["name"], f"{where}.name")
        parameters = inspect.signature(constructor).parameters
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
        allowed = {n for n, p in parameters.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - set(supplied)
        unknown = sorted(set(arguments) - allowed)
        if unknown and not takes_any:
            raise SpecError(f"{where}.{unknown[0]}: not an argument of {self.kind} {spec['name']!r} "
                            f"(it takes {', '.join(sorted(allowed)) or 'none'})")
        for name, admitted in simple_annotations(constructor).items():
            problem = wrong_type(arguments[name], admitted, f"{where}.{name}") if name in arguments else None
            if problem:
                raise SpecError(problem)
        return spec["name"], arguments

    def build(self, spec: Any, where: str, **supplied) -> Any:
        """Check `spec`, then call the registered constructor with its arguments plus `supplied` ones."""
        name, arguments = self.check(spec, where, tuple(supplied))
        try:
            return self._entries[name](**arguments, **supplied)
        except (ValueError, RuntimeError) as error:
            if type(error) not in (ValueError, RuntimeError):  # the project's own (DataError, ...) name their culprit
                raise
            # A value the constructor (or torch inside it) refuses: one line naming the part, as a SpecError.
            message = " ".join(str(error).split())
            named = f"{where.rsplit('.', 1)[-1]}." in message.split(" ", 1)[0]
            raise SpecError(message if named else f"{where} ({name!r}): {message}") from error


def require_at_least(where: str, least: int, **values: int) -> None:
    """Constructor sizes below `least` refused, naming the key: `model.decoder.hidden_size must be >= 1, got 0`."""
    for key, value in values.items():
        if value < least:
            raise ValueError(f"{where}.{key} must be >= {least}, got {value}")


def require_fraction(where: str, **values: float) -> None:
    """Dropout probabilities outside [0, 1), naming the key."""
    for key, value in values.items():
        if not 0 <= value < 1:
            raise ValueError(f"{where}.{key} must be in [0, 1), got {value}")
