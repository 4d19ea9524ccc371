"""The docs stay true to the code: generated reference pages are current, every link and path resolves."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gen_docs():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "scripts" / "gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generated_reference_pages_match_the_code():
    gen = _gen_docs()
    pages = gen.render()
    stale = [name for name, text in pages.items()
             if not (gen.OUT / name).exists() or (gen.OUT / name).read_text() != text]
    assert not stale, f"out of date, run `python scripts/gen_docs.py`: {stale}"
    # and they say something: every RunConfig field, every manifest column, every command
    from normguide.config import RunConfig
    from normguide.data.manifest import MANIFEST_SCHEMA

    assert all(f"`{name}`" in pages["configuration.md"] for name in RunConfig.model_fields)
    assert all(f"`{name}`" in pages["manifest.md"] for name in MANIFEST_SCHEMA.names)
    assert "## `normguide run`" in pages["cli.md"] and "--concepts" in pages["cli.md"]
    from normguide.data.plan import SEED_METHODS

    assert all(f"| `{name}` |" in pages["methods.md"] for name in SEED_METHODS)


def _doc_files():
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def test_every_relative_link_and_image_in_the_docs_exists():
    missing = []
    for doc in _doc_files():
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"^[a-z]+://|^#|^mailto:", target):
                continue
            path = (doc.parent / target.split("#")[0]).resolve()
            if not path.exists():
                missing.append(f"{doc.relative_to(ROOT)} -> {target}")
    assert not missing, missing


def test_readme_is_short_and_names_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 220
    assert "normguide run" in text and "pytest" in text
