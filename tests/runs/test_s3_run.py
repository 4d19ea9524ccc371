"""The flow end to end with the concept table and references on S3 and the dataset written to S3."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import time

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from normguide.pipeline import output_root, resolved_run_id

from .conftest import (
    assert_same_dataset,
    check_consistent,
    run_config,
    run_flow,
    snapshot,
)


def _prefect_record(flow_run_id) -> str:
    """What the Prefect API keeps of a flow run: its parameters and every log line (logs reach the
    API in batches, so wait until the flow run's last one, "Finished in state", has arrived)."""
    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        fr = client.read_flow_run(flow_run_id)
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])), limit=200)
            if any("Finished in state" in log.message for log in logs) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    return json.dumps(fr.parameters, default=str) + "\n" + "\n".join(log.message for log in logs)


def _prefect_database_files() -> dict[str, str]:
    """Every file of the Prefect test server's SQLite database (the db, its WAL and shm), by name."""
    from pathlib import Path

    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    url = PREFECT_SERVER_DATABASE_CONNECTION_URL.value()
    assert url and url.startswith("sqlite"), url
    db = Path(url.split(":///", 1)[1])
    files = {f"database:{p.name}": p.read_bytes().decode("latin-1") for p in db.parent.glob(db.name + "*") if p.is_file()}
    assert f"database:{db.name}" in files
    return files


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_s3_in_s3_out(inputs, s3_server, s3_bucket, tmp_path, caplog, capfd):
    caplog.set_level(logging.INFO)
    cfg = run_config(inputs.s3_table, f"s3://{s3_bucket}/datasets", storage=s3_server.env_storage)
    state, summary = run_flow(cfg)
    assert state.is_completed(), summary
    root = output_root(cfg)
    assert root.startswith(f"s3://{s3_bucket}/datasets/run-") and summary.output_root == root
    assert summary.manifest_uri == f"{root}/manifest.parquet"

    # layout, read back with an independent client (boto3 on the same endpoint)
    client = s3_server.client()
    prefix = root[len(f"s3://{s3_bucket}/"):] + "/"
    listing = client.list_objects_v2(Bucket=s3_bucket, Prefix=prefix)["Contents"]
    objects = {o["Key"][len(prefix):]: o for o in listing}
    assert {"run.json", "manifest.parquet", "_SUCCESS", "seeds/alpha.safetensors", "seeds/beta.safetensors",
            "manifest/part-alpha.parquet", "manifest/part-beta.parquet"} <= set(objects)
    assert not [k for k in objects if "normguide-tmp" in k or "write-check" in k]
    # _SUCCESS was written after every data object; only what is derived from the finished data
    # (the dataset card, the report, the evaluation, exports) comes after it
    derived = ("README.md", "report/", "eval/", "hf/", "webdataset/", "_SUCCESS")
    last = max(o["LastModified"] for k, o in objects.items() if not k.startswith(derived))
    assert objects["_SUCCESS"]["LastModified"] >= last
    assert "README.md" in objects and "report/index.md" in objects

    # every manifest row points at an existing object with the recorded hash
    body = lambda key: client.get_object(Bucket=s3_bucket, Key=prefix + key)["Body"].read()  # noqa: E731
    df = pd.read_parquet(io.BytesIO(body("manifest.parquet")))
    assert len(df) == 10 and df.file_name.is_unique and df.image_id.nunique() == 5
    for row in df.itertuples():
        assert row.file_name == f"images/{row.concept_id}/{row.image_id}.png"
        assert hashlib.sha256(body(row.file_name)).hexdigest() == row.sha256
        assert all(r.startswith(f"s3://{inputs.bucket}/inputs/refs/{row.concept_id}/") for r in row.source_refs)
    assert sum(1 for k in objects if k.startswith("images/")) == 10
    run_doc = json.loads(body("run.json"))
    assert run_doc["status"] == "complete" and run_doc["output_root"] == root
    check_consistent(snapshot(cfg))

    # no secret anywhere: objects, run.json, logs, the captured output, the Prefect API's record
    # and every byte of the Prefect server's database files. The credentials were in the flow's
    # environment only (tests/runs/conftest.py), never in its parameters.
    out, err = capfd.readouterr()
    texts = {"caplog": caplog.text, "stdout": out, "stderr": err,
             "prefect": _prefect_record(state.state_details.flow_run_id)}
    texts.update({k: body(k).decode("latin-1") for k in objects})
    texts.update(_prefect_database_files())
    assert s3_server.endpoint_url in texts["prefect"] and "Finished" in texts["prefect"]  # really read
    assert any(s3_server.endpoint_url in t for w, t in texts.items() if w.startswith("database:"))  # really read
    for secret in (s3_server.secret, s3_server.key):
        for where, text in texts.items():
            assert secret not in text, f"a credential leaked into {where}"
    assert run_doc["config"]["storage"]["secret"] is None and run_doc["config"]["storage"]["key"] is None

    # the same run with local output: byte-identical images and seeds, equal manifest
    local = cfg.with_overrides(output=str(tmp_path / "local"))
    assert resolved_run_id(local) == resolved_run_id(cfg)
    state, summary = run_flow(local)
    assert state.is_completed(), summary
    assert_same_dataset(snapshot(cfg), snapshot(local))

    # a rerun of the complete S3 run is a no-op that says so and writes nothing
    state, summary = run_flow(cfg)
    assert state.is_completed() and summary.already_complete
    after = client.list_objects_v2(Bucket=s3_bucket, Prefix=prefix)["Contents"]
    assert {o["Key"]: (o["ETag"], o["LastModified"]) for o in after} == {
        o["Key"]: (o["ETag"], o["LastModified"]) for o in listing}
