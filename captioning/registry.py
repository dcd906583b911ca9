"""Name -> constructor registries, and the check that a spec read from a file names only registered code.

A spec is `{"name": registered name, **arguments}`. Specs come from trusted Hydra configs and from
untrusted files (checkpoints, saved data configs, feature-store headers); both go through `check`,
so nothing read from a file can choose the code that runs: the name must be registered, every
argument must be a parameter of that constructor, and every value must be plain JSON data
(None, bool, int, float, str, and lists or string-keyed dicts of them) without a `_target_` key.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

PLAIN_SCALARS = (type(None), bool, int, float, str)


def plain(node: Any) -> Any:
    """A Hydra/OmegaConf config node as plain Python data (resolved); anything else as it is."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


class SpecError(ValueError):
    """A spec that names an unregistered component, an unknown argument, or a value that is not plain data."""


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
        return spec["name"], arguments

    def build(self, spec: Any, where: str, **supplied) -> Any:
        """Check `spec`, then call the registered constructor with its arguments plus `supplied` ones."""
        name, arguments = self.check(spec, where, tuple(supplied))
        return self._entries[name](**arguments, **supplied)
