"""Bad references fail only their concepts (issue 25): the up-front check lists every bad reference
of every concept, the run makes the other concepts and ends failed (exit 1) naming the skipped
concepts and their files; ``strict_references`` / ``--strict`` refuses the whole run (exit 2)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from normguide.cli import app
from normguide.config import RunConfig
from normguide.data.images import ReferenceImageError
from normguide.data.schema import write_concept_table
from normguide.pipeline import RunContext, run_dataset
from tests.helpers import make_reference


def run_config(concepts: str, output: str, storage=None, **overrides) -> RunConfig:
    return RunConfig.model_validate({
        "concepts": concepts, "output": output, "model": "demo:sd1", "storage": storage or {},
        "inversion": {"num_inference_steps": 2, "reconstruction": False},
        "generation": {"num_inference_steps": 2, "batch_size": 2}, "plan": {"methods": ["nao"], "num_images": 2},
        "evaluation": {"enabled": False}}).with_overrides(**overrides)


def _table(tmp_path, s3_server=None, bucket=None):
    """good: two fine references; bad: one missing, one corrupt (local paths, or on S3)."""
    good = make_reference(tmp_path / "refs" / "good.png", seed=5)
    (tmp_path / "refs" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    refs = {"good": [good, good], "bad": [tmp_path / "refs" / "missing.png", tmp_path / "refs" / "corrupt.png"]}
    if s3_server is None:
        rows = [{"concept_id": c, "name": c, "reference_uris": [str(p) for p in r]} for c, r in refs.items()]
        write_concept_table(rows, tmp_path / "t.parquet")
        return str(tmp_path / "t.parquet"), rows[1]["reference_uris"]
    client = s3_server.client()
    rows = []
    for c, r in refs.items():
        uris = []
        for p in r:
            if p.exists():
                client.put_object(Bucket=bucket, Key=f"in/{p.name}", Body=p.read_bytes())
            uris.append(f"s3://{bucket}/in/{p.name}")
        rows.append({"concept_id": c, "name": c, "reference_uris": uris})
    write_concept_table(rows, tmp_path / "t.parquet")
    client.put_object(Bucket=bucket, Key="in/t.parquet", Body=(tmp_path / "t.parquet").read_bytes())
    return f"s3://{bucket}/in/t.parquet", rows[1]["reference_uris"]


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_bad_reference_fails_only_its_concept(where, tmp_path, request):
    if where == "s3":
        s3_server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
        table, bad_uris = _table(tmp_path, s3_server, bucket)
        out, storage = f"s3://{bucket}/datasets", s3_server.storage
    else:
        (table, bad_uris), out, storage = _table(tmp_path), str(tmp_path / "out"), None
    cfg = run_config(table, out, storage=storage)
    summary = run_dataset(cfg)
    assert summary.failed == ["bad"] and summary.concepts["good"].status == "completed" and not summary.finalized
    error = summary.concepts["bad"].error
    assert "skipped" in error and all(uri in error for uri in bad_uris), error  # every bad file named
    store = RunContext.create(cfg).storage
    assert len(store.list("images/good")) == 2 and not store.list("images/bad") and not store.exists("_SUCCESS")

    # strict: the whole run is refused, every bad reference named
    with pytest.raises(ReferenceImageError) as info:
        run_dataset(cfg.with_overrides(strict_references=True))
    assert "concept 'bad'" in str(info.value) and all(uri in str(info.value) for uri in bad_uris)


def test_the_command_exits_1_naming_the_skipped_concept_and_2_with_strict(tmp_path):
    table, _ = _table(tmp_path)
    args = ["run", "--no-prefect", "--concepts", table, "--output", str(tmp_path / "out"), "--model", "demo:sd1",
            "--methods", "nao", "--num-images", "2", "--steps", "2", "--inversion-steps", "2", "--no-reconstruction"]
    res = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert res.exit_code == 1, res.output
    assert "bad" in res.output and "good" in res.output and "missing.png" in res.output, res.output
    res = CliRunner().invoke(app, [*args, "--strict"], env={"COLUMNS": "250"})
    assert res.exit_code == 2 and "missing.png" in res.output and "corrupt.png" in res.output, res.output
