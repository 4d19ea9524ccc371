"""export_run's checks, the export settings in RunConfig, and ``normguide export``."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from normguide.config import EXPORT_FORMATS, RunConfig, check_same_content
from normguide.data import manifest as mf
from normguide.data.storage import Storage
from normguide.export import export_run
from normguide.pipeline import run_dataset
from tests.factories import never_load


def test_export_settings_are_validated_and_not_content():
    assert EXPORT_FORMATS == ("hf", "webdataset")
    cfg = RunConfig(export=["webdataset", "hf"], export_shard_size=64)
    assert cfg.export == ("webdataset", "hf") and cfg.export_shard_size == 64
    with pytest.raises(ValidationError, match=r"export: unknown format\(s\) \['zip'\]"):
        RunConfig(export=["hf", "zip"])
    with pytest.raises(ValidationError, match="export: formats must not repeat"):
        RunConfig(export=["hf", "hf"])
    with pytest.raises(ValidationError, match="export_shard_size"):
        RunConfig(export_shard_size=0)
    assert cfg.content_dict() == RunConfig().content_dict()
    assert "export" in cfg.public_dict()  # recorded in run.json, like evaluation


def test_adding_export_to_a_complete_run_resumes_it(run_copy):
    run, _ = run_copy
    cfg = run.config.with_overrides(export=("hf",), export_shard_size=7)
    check_same_content(cfg, (run.root / "run.json").read_bytes(), "run.json")  # not refused
    summary = run_dataset(cfg, storage=Storage.open(str(run.root)), model=never_load)
    assert summary.already_complete
    # the export the complete run did not have is written, with the settings asked for
    assert summary.exports == {"hf": str(run.root / "hf")}
    done = json.loads((run.root / "hf" / "_SUCCESS").read_text())
    assert done["format"] == "hf" and done["shard_size"] == 7
    files = sorted((run.root / "hf").rglob("train-*.parquet"))
    assert files and sum(pq.ParquetFile(f).metadata.num_rows for f in files) == pq.ParquetFile(run.root / "manifest.parquet").metadata.num_rows



def test_export_run_refuses_bad_requests_and_unfinished_runs(run_copy):
    run, ctx = run_copy
    with pytest.raises(ValueError, match=r"unknown export format\(s\) \['tfrecord'\]"):
        export_run(ctx.storage, ["hf", "tfrecord"])
    with pytest.raises(ValueError, match="must not repeat"):
        export_run(ctx.storage, ["hf", "hf"])
    with pytest.raises(ValueError, match="shard_size must be a positive integer, got 0"):
        export_run(ctx.storage, ["hf"], shard_size=0)
    assert export_run(ctx.storage, []) == {}
    (run.root / "_SUCCESS").unlink()
    with pytest.raises(ValueError, match=rf"run '{run.run_id}' at {run.root} is not finalized: it has no _SUCCESS"):
        export_run(ctx.storage, ["webdataset"])
    assert not (run.root / "webdataset").exists() and not (run.root / "hf").exists()


def test_an_image_that_does_not_match_the_manifest_is_named(run_copy):
    run, ctx = run_copy
    row = run.manifest().iloc[7]
    key = mf.image_key(row.concept_id, row.image_id)
    (run.root / key).write_bytes((run.root / key).read_bytes() + b"\0")
    with pytest.raises(ValueError, match=rf"cannot export run at {run.root}: it is damaged, 1 file\(s\) .*: {key} \(sha256 "):
        export_run(ctx.storage, ["webdataset"], shard_size=5)
    assert not (run.root / "webdataset/_SUCCESS").exists()


def _app():
    from normguide.cli import app

    return app


def test_cli_prints_each_format_and_how_to_load_it(run_copy):
    run, _ = run_copy
    result = CliRunner().invoke(_app(), ["export", str(run.root), "--shard-size", "5"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines == [
        f'hf: {run.root}/hf    datasets.load_dataset("parquet", data_files="{run.root}/hf/*/train-*.parquet", split="train")',
        f'webdataset: {run.root}/webdataset    webdataset.WebDataset("{run.root}/webdataset/shard-{{00000..00002}}.tar", shardshuffle=False)',
    ]
    again = CliRunner().invoke(_app(), ["export", str(run.root), "-f", "webdataset", "--shard-size", "5"])
    assert again.exit_code == 0 and again.stdout.splitlines() == lines[1:]


@pytest.mark.parametrize("args, message", [
    (["-f", "zip"], "unknown export format(s) ['zip']"),
    (["--shard-size", "4", "-f", "hf", "--shard-size", "0"], "shard_size must be a positive integer, got 0"),
])
def test_cli_errors_exit_2(run_copy, args, message):
    run, _ = run_copy
    result = CliRunner().invoke(_app(), ["export", str(run.root), *args])
    assert result.exit_code == 2 and result.stderr.startswith("error: ") and message in result.stderr
    assert not (run.root / "hf").exists()


def test_cli_names_a_path_that_is_no_run(tmp_path):
    result = CliRunner().invoke(_app(), ["export", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and f"{tmp_path}/nothing is not a normguide run" in result.stderr
