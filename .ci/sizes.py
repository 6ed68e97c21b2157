"""The size check of the layout: the largest classes, and every runtime function over
80 lines (the harness aside), in interest_core/, consumers/ and producers/ (by ast)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

MAX_CLASS_LINES = 450
MAX_FUNCTION_LINES = 80
PACKAGES = ("interest_core", "consumers", "producers")


def main() -> int:
    classes: list[tuple[int, str]] = []
    functions: list[tuple[int, str]] = []
    for package in PACKAGES:
        for path in sorted(Path(package).rglob("*.py")):
            harness = "harness" in path.parts
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if not isinstance(node, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                where = f"{path}:{node.lineno} {node.name}"
                if isinstance(node, ast.ClassDef):
                    classes.append((lines, where))
                elif not harness:
                    functions.append((lines, where))
    classes.sort(reverse=True)
    functions.sort(reverse=True)
    print("largest classes (lines):")
    for lines, where in classes[:5]:
        print(f"  {lines:5d}  {where}")
    print("longest runtime functions (lines):")
    for lines, where in functions[:5]:
        print(f"  {lines:5d}  {where}")
    too_big = [c for c in classes if c[0] >= MAX_CLASS_LINES]
    too_long = [f for f in functions if f[0] > MAX_FUNCTION_LINES]
    for lines, where in too_big + too_long:
        print(f"TOO LARGE: {where} ({lines} lines)", file=sys.stderr)
    return 1 if too_big or too_long else 0


if __name__ == "__main__":
    sys.exit(main())
