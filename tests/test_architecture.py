"""The import architecture: no import cycle among src/ modules (grimp's graph, the one
import-linter builds), and the contracts in pyproject.toml's ``[tool.importlinter]`` kept —
with a check that a forbidden import in a copy of src/ breaks them, so the contract can fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

from tests.conftest import PROJECT_ROOT

#: Import cycles that exist today and are being removed by their owners; every other cycle
#: fails the test. Each is the whole strongly connected set of modules, so a module joining
#: one of these cycles fails too. Empty this list as they go.
KNOWN_CYCLES: list[frozenset[str]] = [
]


def import_cycles(graph: grimp.ImportGraph, package: str) -> list[frozenset[str]]:
    """Every set of ``package``'s modules that import each other round (the strongly
    connected components with more than one module; Tarjan's algorithm, iteratively)."""
    modules = sorted(m for m in graph.modules if m == package or m.startswith(package + "."))
    inside = set(modules)
    edges = {m: sorted(graph.find_modules_directly_imported_by(m) & inside) for m in modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[frozenset[str]] = []
    for root in modules:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, child = work.pop()
            if child == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            if child < len(edges[node]):
                work.append((node, child + 1))
                target = edges[node][child]
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(frozenset(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return cycles


def _describe(graph: grimp.ImportGraph, cycle: frozenset[str]) -> str:
    """One cycle as its modules and, for each, the modules of the cycle it imports."""
    lines = [f"  cycle of {len(cycle)} modules:"]
    for module in sorted(cycle):
        imported = sorted(graph.find_modules_directly_imported_by(module) & cycle)
        lines.append(f"    {module} -> {', '.join(imported)}")
    return "\n".join(lines)


def test_no_import_cycle_among_src_modules_but_the_known_ones() -> None:
    graph = grimp.build_graph("indvision", cache_dir=None)
    new = [c for c in import_cycles(graph, "indvision") if c not in KNOWN_CYCLES]
    assert not new, "import cycles among src/ modules (function-level and TYPE_CHECKING " \
        "imports count):\n" + "\n".join(_describe(graph, c) for c in new)


def test_the_cycle_finder_finds_a_cycle_and_its_modules() -> None:
    graph = grimp.ImportGraph()
    for module in ("pkg", "pkg.a", "pkg.b", "pkg.c", "pkg.d"):
        graph.add_module(module)
    for importer, imported in (("pkg.a", "pkg.b"), ("pkg.b", "pkg.c"), ("pkg.c", "pkg.a"),
                               ("pkg.c", "pkg.d")):
        graph.add_import(importer=importer, imported=imported)
    assert import_cycles(graph, "pkg") == [frozenset({"pkg.a", "pkg.b", "pkg.c"})]


def _lint_imports(cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` (import-linter's command, beside this interpreter) run in ``cwd`` on
    the ``[tool.importlinter]`` contracts of its pyproject.toml, without a cache."""
    command = Path(sys.executable).parent / "lint-imports"
    env = {**os.environ, "COLUMNS": "200"}  # its report wraps lines at the terminal's width
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run([str(command), "--no-cache", "--no-logo"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_lint_imports_keeps_every_contract() -> None:
    result = _lint_imports(PROJECT_ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def _copy_of_src(tmp_path: Path) -> Path:
    """src/indvision and pyproject.toml copied under ``tmp_path``; returns the copy's src."""
    src = tmp_path / "src"
    shutil.copytree(PROJECT_ROOT / "src" / "indvision", src / "indvision",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(PROJECT_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return src


def test_the_contract_fails_on_a_forbidden_import_direct_or_indirect(tmp_path: Path) -> None:
    src = _copy_of_src(tmp_path)
    clean = _lint_imports(tmp_path, src)
    assert clean.returncode == 0, clean.stdout + clean.stderr  # the copy is what is analysed

    signing = src / "indvision" / "signing.py"  # TF-free core, reaches Keras via models
    signing.write_text(signing.read_text(encoding="utf-8")
                       + "\n\ndef _model():\n    from indvision import models  # noqa: F401\n",
                       encoding="utf-8")
    runtime = src / "indvision" / "edge" / "runtime.py"
    runtime.write_text(runtime.read_text(encoding="utf-8") + "\nimport tensorflow  # noqa\n",
                       encoding="utf-8")
    broken = _lint_imports(tmp_path, src)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "1 broken" in broken.stdout
    assert "indvision.edge.runtime -> tensorflow" in broken.stdout
    assert "indvision.signing -> indvision.models" in broken.stdout
