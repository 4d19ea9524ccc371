"""Bad storage locations and bad references: each error says which and where, before GPU work.

"Before GPU work" is checked on storage: no seeds file (the first output of an inversion) is
written for a run, or for a concept, that fails its checks.
"""

from __future__ import annotations

import pytest

from normguide.data.schema import write_concept_table
from normguide.pipeline import output_root

from .conftest import free_endpoint, open_root, run_config, run_flow


def _error(state, result) -> str:
    assert state.is_failed(), result
    assert isinstance(result, BaseException), result
    return str(result)


def _seeds_written(cfg) -> list[str]:
    return [k for k in open_root(cfg, retry_seconds=1).list() if k.startswith("seeds/")]


def test_missing_output_bucket(inputs, s3_server):
    cfg = run_config(inputs.s3_table, "s3://no-such-bucket-normguide/datasets", storage=s3_server.env_storage)
    msg = _error(*run_flow(cfg))
    assert "bucket does not exist" in msg and "'no-such-bucket-normguide'" in msg, msg
    assert s3_server.endpoint_url in msg, msg


def test_wrong_endpoint(inputs, s3_server, s3_bucket):
    wrong = free_endpoint()
    cfg = run_config(inputs.s3_table, f"s3://{s3_bucket}/datasets",
                     storage={**s3_server.env_storage, "endpoint_url": wrong, "retry_seconds": 1})
    msg = _error(*run_flow(cfg))
    # the concept table is read first (the run id follows its content): the endpoint is named there
    assert "cannot reach S3 endpoint" in msg and wrong in msg and inputs.s3_table in msg, msg
    assert not s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents")


def test_bad_credentials(inputs, s3_server, s3_bucket, monkeypatch):
    bad_secret = "not-the-secret-0123456789abcdef"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bad_secret)  # the flow's environment
    cfg = run_config(inputs.s3_table, f"s3://{s3_bucket}/datasets", storage=s3_server.env_storage)
    msg = _error(*run_flow(cfg))
    assert "rejected the credentials" in msg and s3_server.endpoint_url in msg and inputs.s3_table in msg, msg
    assert bad_secret not in msg and s3_server.key not in msg
    assert not s3_server.client().list_objects_v2(Bucket=s3_bucket).get("Contents")


def test_missing_concept_table(inputs, s3_server, tmp_path):
    table = f"s3://{inputs.bucket}/inputs/nope.parquet"
    cfg = run_config(table, str(tmp_path / "out"), storage=s3_server.env_storage)
    state, result = run_flow(cfg)
    msg = _error(state, result)
    assert isinstance(result, ValueError) and "does not exist" in msg, msg
    assert table in msg and s3_server.endpoint_url in msg, msg


def test_missing_reference_object_is_refused_before_any_work(inputs, s3_server, s3_bucket, tmp_path):
    missing = f"s3://{inputs.bucket}/inputs/refs/gamma/nope.png"
    good = f"s3://{inputs.bucket}/inputs/refs/alpha/0.png"
    write_concept_table([
        {"concept_id": "gamma", "name": "gamma", "reference_uris": [good, missing]},
        {"concept_id": "alpha", "name": "alpha", "reference_uris": [good]},
    ], tmp_path / "t.parquet")
    s3_server.client().put_object(Bucket=s3_bucket, Key="t.parquet", Body=(tmp_path / "t.parquet").read_bytes())
    cfg = run_config(f"s3://{s3_bucket}/t.parquet", f"s3://{s3_bucket}/datasets", storage=s3_server.env_storage,
                     strict_references=True)  # the default skips gamma alone: tests/pipeline/test_partial_references.py
    # the references are in another bucket than the table: the flow's input policy refuses them all,
    # unread, until that bucket is allowed (tests/data/test_input_policy.py)
    state, result = run_flow(cfg)
    err = _error(state, result)
    assert state.is_failed() and err.count("is not under an allowed input root") == 3 and "does not exist" not in err, err
    assert open_root(cfg).list() == []
    cfg = cfg.with_overrides(**{"storage.allowed_input_roots": [f"s3://{inputs.bucket}/inputs"]})
    state, result = run_flow(cfg)
    err = _error(state, result)
    assert state.is_failed() and isinstance(result, ValueError), result
    assert "concept 'gamma': reference image" in err and missing in err and "does not exist" in err, err
    assert open_root(cfg).list() == []  # no model loaded, nothing written (not even run.json)


@pytest.mark.parametrize("scheme", ["http", "gs"])
def test_reference_with_disallowed_scheme_fails_before_work(inputs, s3_server, s3_bucket, tmp_path, scheme):
    bad = f"{scheme}://example.com/refs/x.png"
    write_concept_table([
        {"concept_id": "alpha", "name": "alpha", "reference_uris": [f"s3://{inputs.bucket}/inputs/refs/alpha/0.png"]},
        {"concept_id": "remote", "name": "remote", "reference_uris": [bad]},
    ], tmp_path / "t.parquet")
    cfg = run_config(str(tmp_path / "t.parquet"), f"s3://{s3_bucket}/datasets", storage=s3_server.env_storage)
    msg = _error(*run_flow(cfg))
    assert bad in msg and f"'{scheme}://'" in msg and "'remote'" in msg and "s3://" in msg, msg
    assert _seeds_written(cfg) == []  # not even the good concept was inverted


def test_bad_concept_id_never_reaches_a_key(inputs, s3_server, s3_bucket, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # written with pyarrow directly: write_concept_table would refuse it
    pq.write_table(pa.table({"concept_id": ["../escape"], "name": ["x"],
                             "reference_uris": [[f"s3://{inputs.bucket}/inputs/refs/alpha/0.png"]]}),
                   tmp_path / "t.parquet")
    cfg = run_config(str(tmp_path / "t.parquet"), f"s3://{s3_bucket}/datasets", storage=s3_server.env_storage)
    msg = _error(*run_flow(cfg))
    assert "concept_id" in msg and "../escape" in msg, msg
    assert [k for k in s3_server_keys(s3_server, s3_bucket) if "escape" in k or not k.startswith("datasets/")] == []
    assert _seeds_written(cfg) == []
    assert output_root(cfg).startswith(f"s3://{s3_bucket}/datasets/")


def s3_server_keys(s3_server, bucket: str) -> list[str]:
    return [o["Key"] for o in s3_server.client().list_objects_v2(Bucket=bucket).get("Contents", [])]
