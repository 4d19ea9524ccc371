"""normguide.data.layout names every key of a run: its docstring documents each, and no other
module spells a key itself."""

from __future__ import annotations

import ast
import pathlib

from normguide.data import layout

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONSTANTS = {name: value for name, value in vars(layout).items() if name.isupper() and isinstance(value, str)}
KEY_FUNCTIONS = ["seeds_key", "image_key", "part_key", "sheet_key", "norms_key", "concept_page_key", "hf_file_key",
                 "wds_shard_key", "export_success_key", "export_started_key"]


def test_the_docstring_documents_every_name_of_the_layout():
    doc = layout.__doc__
    for name in [*CONSTANTS, *KEY_FUNCTIONS]:
        if name in ("MANIFEST_DIR", "IMAGES_DIR", "SEEDS_DIR", "EVAL_DIR", "HF_DIR", "HF_SPLIT", "WEBDATASET_DIR",
                    "EXPORT_SUCCESS", "EXPORT_STARTED", "WRITE_CHECK", "REPORT_DIR"):
            continue  # folder and file-name parts: documented through the keys made from them
        assert name in doc, f"layout's docstring does not document {name}"


def test_keys_are_the_ones_the_docstring_shows():
    assert layout.seeds_key("c") == "seeds/c.safetensors"
    assert layout.image_key("c", "nao-centroid-00000") == "images/c/nao-centroid-00000.png"
    assert layout.part_key("c") == "manifest/part-c.parquet" and layout.is_part_key(layout.part_key("c"))
    assert layout.hf_file_key("nao", 0, 2) == "hf/nao/train-00000-of-00002.parquet"
    assert layout.wds_shard_key(3, ".tar") == "webdataset/shard-00003.tar"
    assert layout.export_success_key("hf") == "hf/_SUCCESS"
    assert layout.concept_page_key("c") == "report/c/index.html"
    for key in (layout.RUN_JSON, layout.SUCCESS, layout.MANIFEST, layout.EVAL_METRICS, layout.CARD, layout.REPORT_INDEX):
        assert key in layout.__doc__


def test_no_other_module_spells_a_key_of_the_run():
    keys = {v for v in CONSTANTS.values() if "/" in v or "." in v or v.startswith("_")}
    found = []
    for folder in ("normguide", "flows", "tasks", "deployments"):
        for path in (ROOT / folder).rglob("*.py"):
            if path == pathlib.Path(layout.__file__).resolve():
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Constant) and node.value in keys:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value!r}")
    assert not found, "keys spelled outside normguide.data.layout:\n" + "\n".join(found)
