"""The layering of docs/architecture.md, checked: import-linter's contracts (pyproject.toml), no
import cycle among the package's modules, no function-local import of the package without a
reason, modules and the two loops within their sizes, ruff clean."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "mmboundary"
MAX_MODULE_LINES = 600
MAX_LOOP_LINES = 120


def test_import_linter_contracts_hold():
    """`lint-imports` (the contracts in pyproject.toml) passes. In a subprocess: import-linter
    reconfigures logging, which would silence the loggers of the tests after this one."""
    result = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports; "
                             "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_config_loads_without_torch():
    """Each config section lives beside its code in a module that imports nothing heavy: loading
    and validating a config imports neither torch nor transformers."""
    code = ("import sys; from mmboundary.config import load_config; load_config(None, ['rl.lr=1e-4']); "
            "print(sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def _cycles(graph: grimp.ImportGraph) -> list[tuple[str, str]]:
    """Pairs (a, b) where a imports b directly and b reaches a back."""
    out = []
    for a in sorted(graph.modules):
        for b in sorted(graph.find_modules_directly_imported_by(a)):
            if graph.chain_exists(importer=b, imported=a):
                out.append((a, b))
    return out


def test_cycle_finder_finds_a_cycle():
    graph = grimp.ImportGraph()
    for m in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.c")
    assert _cycles(graph) == []
    graph.add_import(importer="p.c", imported="p.a")
    assert set(_cycles(graph)) == {("p.a", "p.b"), ("p.b", "p.c"), ("p.c", "p.a")}


def test_no_import_cycle_among_modules():
    graph = grimp.build_graph("mmboundary")
    # a package's __init__ re-exporting its children is not a cycle between modules
    for package in [m for m in graph.modules if (PACKAGE / Path(*m.split(".")[1:]) / "__init__.py").exists()]:
        for child in graph.find_children(package):
            for importer, imported in ((package, child), (child, package)):
                if graph.direct_import_exists(importer=importer, imported=imported):
                    graph.remove_import(importer=importer, imported=imported)
    assert _cycles(graph) == []


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_over_its_size():
    sizes = {str(p.relative_to(PACKAGE)): len(p.read_text("utf-8").splitlines()) for p in _modules()}
    assert {k: v for k, v in sizes.items() if v > MAX_MODULE_LINES} == {}


def _local_package_imports(path: Path) -> list[tuple[int, str]]:
    """(line, text) of each `from mmboundary...` / `import mmboundary...` inside a function,
    without a comment on its line saying why it is local."""
    source = path.read_text("utf-8")
    lines = source.splitlines()
    out = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(fn):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if any(n == "mmboundary" or n.startswith("mmboundary.") for n in names):
                text = lines[node.lineno - 1]
                if "#" not in text and "#" not in lines[node.end_lineno - 1]:
                    out.append((node.lineno, text.strip()))
    return out


def test_local_import_finder(tmp_path):
    p = tmp_path / "m.py"
    p.write_text("from mmboundary import io\n\ndef f():\n    from mmboundary.io import x\n"
                 "    import json\n    from mmboundary import y  # lazy: optional gguf\n")
    assert _local_package_imports(p) == [(4, "from mmboundary.io import x")]


def test_function_local_package_imports_say_why():
    found = {str(p.relative_to(PACKAGE)): hits for p in _modules() if (hits := _local_package_imports(p))}
    assert found == {}


def test_the_two_loops_read_in_one_screen():
    from mmboundary.compare import run_compare
    from mmboundary.training.rl import train_rl

    for fn in (run_compare, train_rl):
        assert len(inspect.getsource(fn).splitlines()) < MAX_LOOP_LINES, fn.__name__


def test_ruff_is_clean():
    """`ruff check` (rules in pyproject.toml; ruff comes with the test extras)."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "src", "tests", "benchmarks"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-4000:]
