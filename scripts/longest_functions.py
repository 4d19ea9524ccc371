"""The longest functions of the code (lines from ``def`` to the last line of the body).

    python scripts/longest_functions.py [--top 10] [folders ...]   (default: normguide flows tasks deployments)
"""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def functions(path: Path):
    """(lines, "path:line name") of every function and method in ``path``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            yield node.end_lineno - start + 1, f"{path.relative_to(ROOT)}:{node.lineno} {node.name}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", default=["normguide", "flows", "tasks", "deployments"])
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args()
    found = [f for folder in args.folders for p in sorted((ROOT / folder).rglob("*.py")) for f in functions(p)]
    for lines, where in sorted(found, reverse=True)[: args.top]:
        print(f"{lines:5d}  {where}")


if __name__ == "__main__":
    main()
