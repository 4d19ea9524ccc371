"""An output root that would put a run where it must not go is refused before anything is written."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from normguide.cli import app
from normguide.config import RunConfig
from normguide.data.storage import Storage
from normguide.pipeline import output_root, resolved_run_id

DEGENERATE = ["", " ", "\t\n", "s3://", "S3://", "s3:///", "file://", "file:///", "file:////", "/", "//", "/../",
              " ./out", "./out "]


@pytest.mark.parametrize("output", DEGENERATE)
def test_degenerate_output_refused_in_config(output):
    with pytest.raises(ValueError, match=r"output") as ei:
        RunConfig(output=output)
    assert repr(output) in str(ei.value) or "output must be" in str(ei.value)
    with pytest.raises(ValueError, match=r"output"):
        RunConfig().with_overrides(output=output)


@pytest.mark.parametrize("root", ["", "   ", "s3://", "file://", "file:///", "/"])
def test_degenerate_root_refused_by_storage(root):
    with pytest.raises(ValueError, match=r"output root"):
        Storage.open(root)


def test_fine_roots_still_accepted(tmp_path):
    for ok in (str(tmp_path), f"file://{tmp_path}", "s3://bucket", "s3://bucket/prefix", "./outputs", "out"):
        assert RunConfig(output=ok).output == ok


def test_output_root_is_absolute_for_local_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = RunConfig(output="./outputs")
    assert output_root(cfg) == f"{tmp_path}/outputs/{resolved_run_id(cfg)}"
    assert output_root(cfg.with_overrides(output=f"file://{tmp_path}/x/")) == f"{tmp_path}/x/{resolved_run_id(cfg)}"
    assert output_root(cfg.with_overrides(output="s3://b/p/")) == f"s3://b/p/{resolved_run_id(cfg)}"


@pytest.mark.parametrize("output", ["", "s3://", "/"])
def test_cli_refuses_degenerate_output_and_writes_nothing(tmp_path, monkeypatch, output):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens: nothing may start
    started = []
    # a regression must not write a dataset at the filesystem root: the driver is a stub here
    monkeypatch.setattr("normguide.pipeline.run_dataset", lambda *a, **k: started.append(a) or 1 / 0)
    before = set(os.listdir("/"))
    res = CliRunner().invoke(app, ["run", "--no-prefect", "--output", output])
    assert res.exit_code == 2, res.output
    assert "output" in res.output and "run run-" not in res.output and not started
    assert set(os.listdir("/")) == before and not list(tmp_path.iterdir())


def test_cli_first_line_shows_the_absolute_output_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setattr("normguide.pipeline.run_dataset", lambda *a, **k: 1 / 0)
    res = CliRunner().invoke(app, ["run", "--no-prefect", "--output", "./rel"])
    first = res.output.splitlines()[0]
    assert first.startswith("run run-") and f" -> {tmp_path}/rel/run-" in first, res.output
