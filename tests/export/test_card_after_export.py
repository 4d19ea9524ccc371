"""The dataset card stays true: a later `normguide export` rewrites it (and report/index.md), and
`datasets.load_dataset(<run folder>)` loads through it, per method too, with no warning from
datasets, from the run's folder or a copy of it elsewhere (no absolute path in the card)."""

from __future__ import annotations

import logging
import shutil
import warnings

import datasets
import pytest
import yaml
from typer.testing import CliRunner

from normguide.cli import app
from normguide.pipeline import steps
from tests.export.conftest import METHODS


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture
def datasets_warnings():
    """Every warning datasets gives while the test runs: its logger's (it logs the card's
    problems) and Python warnings."""
    handler = _Records()
    logger = logging.getLogger("datasets")
    logger.addHandler(handler)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield lambda: [r.getMessage() for r in handler.records] + [
            str(w.message) for w in caught if "datasets" in (w.filename or "")]
    logger.removeHandler(handler)


def _header(root) -> dict:
    text = (root / "README.md").read_text()
    return yaml.safe_load(text.split("---\n")[1])


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_manifest_card_loads_without_a_warning(run_copy, datasets_warnings):
    run, ctx = run_copy
    steps.report(ctx)  # the card the run wrote, as it is now
    ds = datasets.load_dataset(str(run.root), split="train")
    assert ds.num_rows == len(run.manifest()) and "file_name" in ds.column_names
    assert datasets_warnings() == []


def test_a_later_export_rewrites_the_card_and_it_loads_per_method(run_copy, datasets_warnings, tmp_path):
    run, ctx = run_copy
    steps.report(ctx)
    assert _header(run.root)["configs"][0]["data_files"][0]["path"] == "manifest.parquet"
    res = CliRunner().invoke(app, ["export", str(run.root), "--format", "hf"])
    assert res.exit_code == 0, res.output
    header = _header(run.root)
    assert [c["config_name"] for c in header["configs"]] == ["default", *METHODS]
    assert all(c["data_files"][0]["path"].startswith("hf/") for c in header["configs"])
    features = {f["name"] for f in header["dataset_info"][0]["features"]}
    assert {"image", "label"} <= features
    card = (run.root / "README.md").read_text()
    assert str(run.root) not in card and str(tmp_path) not in card  # nothing of this machine's paths
    assert "hf/<method>/train-*.parquet" in card and "formats: manifest, hf" in (run.root / "report/index.md").read_text()

    manifest = run.manifest()
    # loaded from a copy elsewhere: the card's paths are relative to the folder
    moved = shutil.copytree(run.root, tmp_path / "moved" / run.root.name)
    for root in (run.root, moved):
        ds = datasets.load_dataset(str(root), split="train")
        assert ds.num_rows == len(manifest) and ds.features["image"].__class__.__name__ == "Image"
        assert ds.features["label"].names == sorted(manifest.concept_id.unique())
        for method in METHODS:
            one = datasets.load_dataset(str(root), method, split="train")
            assert set(one["method"]) == {method} and one.num_rows == (manifest.method == method).sum()
    assert datasets_warnings() == []
