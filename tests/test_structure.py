"""The package's layout holds: no import cycles, every module imports on its own, modules stay small,
and the library never imports the code around it (benchmarks/, tools/).

Imports are read from the source with `ast` (those inside functions included: they run too, only later),
so these checks need no import of the package except the one that imports each module.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT

PACKAGE = ROOT / "captioning"
MAX_LINES = 300  # STYLE.md: a module past ~300 lines usually holds two concerns
OUTSIDE = ("benchmarks", "tools")  # code that uses the library, never the other way round


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_package(name: str) -> bool:
    return name in MODULES and MODULES[name].name == "__init__.py"


def owning_module(dotted: str) -> str:
    """The module a dotted import name lands in: itself when it is a module, else its longest module prefix."""
    while dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted


def absolute(node: ast.ImportFrom, importer: str) -> str:
    """`from .x import y` inside `importer` -> the absolute module name `from` names."""
    if not node.level:
        return node.module or ""
    package = importer if is_package(importer) else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


def in_package(name: str) -> bool:
    return name == "captioning" or name.startswith("captioning.")


def imports_all_submodules(node: ast.Call, importer: str) -> bool:
    """`importlib.import_module(f"{__name__}.{...}")` in a package's __init__: it imports every module of its folder."""
    name = getattr(node.func, "attr", getattr(node.func, "id", None))
    if name != "import_module" or not is_package(importer) or not node.args:
        return False
    first = node.args[0]
    return (isinstance(first, ast.JoinedStr) and len(first.values) > 1
            and isinstance(first.values[0], ast.FormattedValue) and getattr(first.values[0].value, "id", None) == "__name__")


def imported_names(path: Path, importer: str) -> list[tuple[int, str]]:
    """(line, absolute dotted name) of every import in the file, at any depth; `from a import b` gives `a.b`."""
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = absolute(node, importer)
            names += [(node.lineno, f"{base}.{alias.name}" if alias.name != "*" else base) for alias in node.names]
        elif isinstance(node, ast.Call) and imports_all_submodules(node, importer):
            names += [(node.lineno, name) for name in MODULES if name.rpartition(".")[0] == importer]
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            names.append((node.lineno, str(node.args[0].value)))
    return names


def edges(path: Path, importer: str) -> set[str]:
    """The package modules a file imports. `from captioning.pkg import name` is an edge to the module
    `captioning.pkg.name` when that file exists, else to `captioning.pkg` (its __init__)."""
    return {owning_module(target) for _, target in imported_names(path, importer) if in_package(target)} - {importer}


def import_graph() -> dict[str, set[str]]:
    return {name: edges(path, name) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[tuple[list[str], list[str]]]:
    """(one cycle, first node repeated at the end; all the modules in it) for every strongly connected component
    of more than one module."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                connect(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [(cycle_through(min(component), component, graph), sorted(component)) for component in components]


def cycle_through(start: str, component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path start -> ... -> start inside the component (breadth first)."""
    previous, frontier = {start: None}, [start]
    while frontier:
        following = []
        for node in frontier:
            for other in sorted(graph[node] & component):
                if other == start:
                    path = [node]
                    while previous[path[-1]] is not None:
                        path.append(previous[path[-1]])
                    return path[::-1] + [start]
                if other not in previous:
                    previous[other] = node
                    following.append(other)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def test_the_cycle_finder_finds_cycles():
    """It can fail: a made-up graph with a package <-> submodule cycle and a three-module cycle."""
    graph = {"p": {"p.a"}, "p.a": {"p"}, "x": {"y"}, "y": {"z"}, "z": {"x", "p"}, "leaf": set()}
    assert sorted(cycles(graph)) == [(["p", "p.a", "p"], ["p", "p.a"]), (["x", "y", "z", "x"], ["x", "y", "z"])]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_import_edges_are_resolved_to_modules(tmp_path):
    """Names imported from a package resolve to its submodule when there is one, else to the package;
    imports inside functions and relative imports count; other packages do not."""
    source = tmp_path / "example.py"
    source.write_text(textwrap.dedent("""
        import torch
        import captioning.models.encoders
        from captioning.models import memory, CaptionModel
        from . import heads


        def later():
            from captioning.data.sources import read_source
            from captioning.data.sources.coco import read_json
    """))
    assert edges(source, "captioning.models.captioner") == {
        "captioning.models.encoders", "captioning.models.memory", "captioning.models", "captioning.models.heads",
        "captioning.data.sources", "captioning.data.sources.coco"}
    graph = import_graph()
    assert len(MODULES) > 30 and set(graph) == set(MODULES)
    assert all(target in MODULES for targets in graph.values() for target in targets)
    assert "captioning.models.encoders" in graph["captioning.models.captioner"]


def test_no_import_cycles():
    found = cycles(import_graph())
    assert not found, "import cycles among captioning modules:\n" + "\n".join(
        f"{' -> '.join(cycle)}  (the cycle's component: {', '.join(component)})" for cycle, component in found)


def test_every_module_imports_on_its_own():
    """Each module imported first, in one fresh interpreter, with the package's modules forgotten between imports,
    so a module that only works after another one was imported (or a cycle hit from its side) fails here."""
    script = textwrap.dedent("""
        import importlib, json, sys, traceback
        failures = {}
        for name in json.loads(sys.argv[1]):
            for loaded in [m for m in sys.modules if m == "captioning" or m.startswith("captioning.")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except BaseException:
                failures[name] = traceback.format_exc(limit=-3)
        print(json.dumps(failures))
    """)
    done = subprocess.run([sys.executable, "-c", script, json.dumps(sorted(MODULES))], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "TQDM_DISABLE": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    failures = json.loads(done.stdout.strip().splitlines()[-1])
    assert not failures, "modules that do not import on their own:\n" + "\n".join(
        f"{name}:\n{error}" for name, error in failures.items())


def test_modules_stay_small():
    long = {name: count for name, path in MODULES.items() if (count := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: " + ", ".join(f"{n} ({c})" for n, c in sorted(long.items()))


def outside_imports(path: Path, importer: str) -> list[str]:
    return [f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name}:{line} imports {target}"
            for line, target in imported_names(path, importer) if target.split(".")[0] in OUTSIDE]


def test_the_library_never_imports_benchmarks_or_tools(tmp_path):
    found = [line for name, path in MODULES.items() for line in outside_imports(path, name)]
    assert not found, "\n".join(found)
    example = tmp_path / "example.py"  # and the check can fail
    example.write_text("import importlib\nfrom benchmarks.training_throughput import run\n"
                       "def later():\n    return importlib.import_module('tools.sweep_summary')\n")
    assert outside_imports(example, "captioning.example") == [
        "example.py:2 imports benchmarks.training_throughput.run", "example.py:4 imports tools.sweep_summary"]
