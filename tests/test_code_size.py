"""Small modules with one job: no module in src/, teachers/ or tasks/ over 500 lines, no function over 80
(STYLE.md; issue 13's bar). A function's length counts from its ``def`` (decorators excluded) to its last
line, docstring included."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = ("src", "teachers", "tasks")
MAX_MODULE, MAX_FUNCTION = 500, 80


def _sources() -> list[Path]:
    return sorted(p for root in ROOTS for p in (REPO / root).rglob("*.py"))


def long_functions(source: str, limit: int) -> list[tuple[str, int]]:
    """(qualified name, lines) of every function or method in ``source`` longer than ``limit`` lines."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    lines = child.end_lineno - child.lineno + 1
                    if lines > limit:
                        found.append((name, lines))
                visit(child, name + ".")

    visit(ast.parse(source), "")
    return found


def test_the_checker_measures_functions():
    body = "\n".join(f"    x{i} = {i}" for i in range(5))
    src = f"class A:\n    def f(self):\n{body.replace('    ', '        ')}\n\ndef g():\n{body}\n"
    assert long_functions(src, 5) == [("A.f", 6), ("g", 6)]
    assert long_functions(src, 6) == []


def test_no_module_over_500_lines_and_no_function_over_80():
    files = _sources()
    assert len(files) > 50  # the roots were found
    big = {str(p.relative_to(REPO)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_MODULE}
    assert not big, f"modules over {MAX_MODULE} lines: {big}"
    long = {
        f"{p.relative_to(REPO)}:{name}": n
        for p in files
        for name, n in long_functions(p.read_text(), MAX_FUNCTION)
    }
    assert not long, f"functions over {MAX_FUNCTION} lines: {long}"
