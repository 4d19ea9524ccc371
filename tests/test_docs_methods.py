"""docs/methods.md is generated from the method registry and stays in step with it."""

from __future__ import annotations

import runpy
from pathlib import Path

from normguide.data.plan import SEED_METHODS

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_methods_page_lists_every_registered_method():
    make = runpy.run_path(str(DOCS / "make_methods.py"))
    assert (DOCS / "methods.md").read_text() == make["render"](), "run python docs/make_methods.py"
    text = (DOCS / "methods.md").read_text()
    for name in SEED_METHODS:
        assert f"| `{name}` |" in text
