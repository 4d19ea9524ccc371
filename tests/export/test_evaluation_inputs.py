"""The input policy also holds for the evaluation's held-out table (``evaluation.real_test``):
a table on S3 may not make ``normguide evaluate`` read files of the machine that runs it."""

from __future__ import annotations

from typer.testing import CliRunner

from normguide.cli import app
from normguide.data.schema import write_concept_table
from tests.helpers import make_reference


def test_a_remote_real_test_table_reads_only_its_own_folder(run_copy, s3_server, s3_bucket, tmp_path, monkeypatch):
    run, _ = run_copy
    for k, v in s3_server.aws_env.items():
        monkeypatch.setenv(k, v)
    private = make_reference(tmp_path / "worker" / "private.png", seed=7)
    rows = [{"concept_id": "alpha", "name": "alpha", "reference_uris": [str(private)]}]
    write_concept_table(rows, tmp_path / "rt.parquet")
    s3_server.client().put_object(Bucket=s3_bucket, Key="held-out/rt.parquet", Body=(tmp_path / "rt.parquet").read_bytes())
    res = CliRunner().invoke(app, ["evaluate", str(run.root), "--real-test", f"s3://{s3_bucket}/held-out/rt.parquet",
                                   "--endpoint-url", s3_server.endpoint_url], env={"COLUMNS": "400"})
    assert res.exit_code == 2, res.output
    assert f"concept 'alpha', reference_uris: {str(private)!r} is not under an allowed input root" in res.output
    assert not (run.root / "eval").exists()
