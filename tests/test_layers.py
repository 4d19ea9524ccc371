"""The arrows point down: import-linter's layers contract (pyproject.toml, `lint-imports`), the
Prefect boundary, and no private name imported across modules."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("normguide", "flows", "tasks", "deployments")


def _dotted(folder: str, path: Path) -> str:
    """The module's installed name: flows/x.py is normguide.flows.x (pyproject's package-dir)."""
    parts = path.relative_to(ROOT / folder).with_suffix("").parts
    return ".".join(["normguide", *([] if folder == "normguide" else [folder]), *parts])


def _imports(folder: str):
    """(path, line, module imported from, names) of every import under ``folder``, relative
    imports resolved."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        package = _dotted(folder, path).split(".")[:-1] if path.name != "__init__.py" else _dotted(folder, path).split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                module = ".".join([*base, *(node.module.split(".") if node.module else [])])
                yield path, node.lineno, module, [a.name for a in node.names]
            elif isinstance(node, ast.Import):
                for a in node.names:
                    yield path, node.lineno, a.name, []


def test_the_layers_contract_holds():
    out = subprocess.run([sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                          "sys.exit(lint_imports_command(['--no-cache']))"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "BROKEN" not in out.stdout and "KEPT" in out.stdout


def test_no_private_name_is_imported_across_modules():
    found = []
    for folder in FOLDERS:
        for path, line, module, names in _imports(folder):
            if not module.startswith("normguide"):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            parts = module.split(".")
            importer = _dotted(folder, path)
            # a private module (``geometry._numerics``) is for its own package only
            outside = any(p.startswith("_") and not p.startswith("__") and not importer.startswith(".".join(parts[:i]) + ".")
                          for i, p in enumerate(parts))
            if private or outside:
                found.append(f"{path.relative_to(ROOT)}:{line}: from {module} import {', '.join(names)}")
    assert not found, "private names imported across modules:\n" + "\n".join(found)


def test_the_library_imports_prefect_only_in_the_cli_prefect_handling():
    allowed = ("normguide/cli/",)
    found = [f"{p.relative_to(ROOT)}:{line}" for p, line, module, _ in _imports("normguide")
             if module.split(".")[0] == "prefect" and not str(p.relative_to(ROOT)).startswith(allowed)]
    assert not found, "prefect imported by the library: " + ", ".join(found)


def test_tasks_and_flows_import_the_library_not_the_cli():
    found = [f"{p.relative_to(ROOT)}:{line}: {module}" for folder in ("flows", "tasks")
             for p, line, module, _ in _imports(folder) if module.startswith("normguide.cli")]
    assert not found, found


def test_the_loader_names_the_shipped_demo_weights_where_the_demo_package_keeps_them():
    from normguide.demo import PIPELINE_DIR
    from normguide.diffusion.loading import TRAINED_DEMO_DIR

    assert TRAINED_DEMO_DIR == PIPELINE_DIR and (TRAINED_DEMO_DIR / "model_index.json").is_file()
