"""The size limits a newcomer can read within: no src/ module over 450 lines, no function over
60 lines or with more than 8 parameters (``self``/``cls`` not counted), no module docstring
over 15 lines. Read from the source with ``ast``; each failure names the file and line."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import PROJECT_ROOT

SRC = PROJECT_ROOT / "src" / "indvision"
MAX_FILE_LINES, MAX_FUNCTION_LINES, MAX_PARAMETERS, MAX_DOCSTRING_LINES = 450, 60, 8, 15


def parameters(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [*args.posonlyargs, *args.args, *args.kwonlyargs]
    count = len(names) + (args.vararg is not None) + (args.kwarg is not None)
    return count - (bool(args.args) and args.args[0].arg in ("self", "cls"))


def oversized(path: Path, root: Path = PROJECT_ROOT) -> list[str]:
    """Every limit ``path`` breaks, one ``file:line what`` each (named from ``root``)."""
    text = path.read_text(encoding="utf-8")
    tree = ast.parse(text)
    name = path.relative_to(root)
    found = []
    if len(text.splitlines()) > MAX_FILE_LINES:
        found.append(f"{name}: {len(text.splitlines())} lines")
    doc = ast.get_docstring(tree, clean=False) or ""
    if len(doc.splitlines()) > MAX_DOCSTRING_LINES:
        found.append(f"{name}: module docstring of {len(doc.splitlines())} lines")
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{name}:{node.lineno} {node.name} is {length} lines")
            if parameters(node) > MAX_PARAMETERS:
                found.append(f"{name}:{node.lineno} {node.name} takes {parameters(node)}")
    return found


def test_every_src_module_keeps_the_size_limits() -> None:
    found = [line for path in sorted(SRC.rglob("*.py")) for line in oversized(path)]
    assert not found, "\n".join(found)


def test_the_limits_catch_a_long_function_and_a_long_parameter_list(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    args = ", ".join(f"a{i}" for i in range(MAX_PARAMETERS + 1))
    source = tmp_path / "probe.py"
    source.write_text(f'"""Probe."""\n\n\ndef long():\n{body}\n\n\ndef wide({args}):\n    pass\n'
                      f"\n\nclass C:\n    def fine(self, {', '.join(args.split(', ')[:8])}):\n"
                      "        pass\n")
    found = oversized(source, tmp_path)
    assert len(found) == 2, found
    assert "long is 61 lines" in found[0] + found[1] and "wide takes 9" in found[0] + found[1]
