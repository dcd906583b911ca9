"""The package's layout holds: the import contracts in pyproject.toml (layers, no cycles; `lint-imports`), the
lint rules (`ruff check`), every module imports on its own, modules stay small, and the library never imports the
code around it (benchmarks/, tools/).

The last check reads imports from the source with `ast` (those inside functions included: they run too, only
later), so it needs no import of the package.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

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


def absolute(node: ast.ImportFrom, importer: str) -> str:
    """`from .x import y` inside `importer` -> the absolute module name `from` names."""
    if not node.level:
        return node.module or ""
    package = importer if is_package(importer) else importer.rpartition(".")[0]
    for _ in range(node.level - 1):
        package = package.rpartition(".")[0]
    return f"{package}.{node.module}" if node.module else package


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


def run_tool(*command: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, timeout=300)


def lint_imports(*config: Path) -> subprocess.CompletedProcess:
    """`lint-imports` on pyproject.toml's contracts, or on the given config files."""
    return run_tool("-c", "from importlinter.cli import lint_imports_command; lint_imports_command()", "--no-cache",
                    *map(str, config))


@pytest.mark.slow
def test_import_contracts_hold():
    done = lint_imports()
    assert done.returncode == 0 and " 0 broken" in done.stdout, done.stdout[-4000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_the_import_contracts_can_fail(tmp_path):
    """The contracts read this code: the layers upside down, and a ban on an import the models make, are broken."""
    config = tmp_path / "upside_down.toml"
    config.write_text(textwrap.dedent("""
        [tool.importlinter]
        root_packages = ["captioning"]

        [[tool.importlinter.contracts]]
        name = "upside down"
        type = "layers"
        layers = ["captioning.data", "captioning.models"]

        [[tool.importlinter.contracts]]
        name = "models without data"
        type = "forbidden"
        source_modules = ["captioning.models"]
        forbidden_modules = ["captioning.data"]
    """))
    done = lint_imports(config)
    assert done.returncode == 1 and "0 kept, 2 broken" in done.stdout, done.stdout[-4000:] + done.stderr[-2000:]
    assert "captioning.models is not allowed to import captioning.data" in " ".join(done.stdout.split())


def test_every_top_level_module_has_a_layer():
    """A new module or subpackage of captioning/ is placed in a layer, or the layers contract says nothing of it."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(contract["layers"] for contract in contracts if contract["type"] == "layers")
    placed = {name.strip("() ") for layer in layers for name in layer.replace("|", ":").split(":")}
    top_level = {f"captioning.{path.stem if path.is_file() else path.name}" for path in PACKAGE.iterdir()
                 if (path.suffix == ".py" and path.name != "__init__.py") or (path / "__init__.py").is_file()}
    assert top_level - placed == set(), f"modules in no layer of pyproject.toml: {sorted(top_level - placed)}"


@pytest.mark.slow
def test_ruff_is_clean():
    """pyproject.toml's rule set (pyflakes, syntax errors, import order, bugbear) over the whole repository."""
    done = run_tool("-m", "ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]


@pytest.mark.slow
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
