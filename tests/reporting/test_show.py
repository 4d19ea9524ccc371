"""``normguide show`` (on normguide's own app) and the report's Prefect artifact."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from normguide.cli import app
from normguide.reporting import write_report
from normguide.reporting.cost import cost_lines
from tests.reporting.conftest import NUM_IMAGES


def show(*args: str):
    return CliRunner().invoke(app, ["show", *args])


def test_show_a_complete_run_exits_0_with_counts_evaluation_and_report(finished_run, tmp_path):
    root = finished_run.copy(tmp_path / "run")
    write_report(finished_run.context(root).storage)
    res = show(str(root))
    assert res.exit_code == 0, res.output
    assert "status: COMPLETE" in res.output
    assert f"| `digit-two` | two | {NUM_IMAGES} | {NUM_IMAGES} | {2 * NUM_IMAGES} |" in res.output
    assert "| `nao` |" in res.output and "recognisability" in res.output
    assert f"dataset card: {root}/README.md" in res.output and "contact_sheet.png (2)" in res.output
    # the generation's cost from run.json, in the words of the run's own summary
    cost = json.loads((root / "run.json").read_text())["cost"]
    assert cost["images"] > 0
    assert f"generation: {cost['images']} image(s) in {cost['generation_seconds']:.2f} s of model time, " in res.output
    assert f"{cost['images_per_s_per_device']:.3f} images/s per device (cpu, float32)" in res.output
    assert "MFU: n/a (" in res.output and "not priced (set cost.device_price_per_hour" in res.output
    assert "\n".join(cost_lines(cost)) in res.output and f"cost covers {cost['scope']}" in res.output


def test_show_without_success_exits_1(finished_run, tmp_path):
    root = finished_run.copy(tmp_path / "run")
    (root / "_SUCCESS").unlink()
    res = show(str(root))
    assert res.exit_code == 1, res.output
    assert "status: RUNNING" in res.output and "_SUCCESS is missing" in res.output


def test_show_an_unfinalized_run_counts_its_manifest_parts(finished_run, tmp_path):
    root = finished_run.copy(tmp_path / "run")
    for name in ("_SUCCESS", "manifest.parquet"):
        (root / name).unlink()
    (root / "manifest" / "part-digit-five.parquet").unlink()
    res = show(str(root))
    assert res.exit_code == 1, res.output
    assert "counted from 1 manifest part(s) (not finalized)" in res.output
    assert "`digit-two`" in res.output and "`digit-five`" not in res.output
    doc = json.loads((root / "run.json").read_text())
    del doc["cost"]  # a run that has not recorded its cost yet: no cost lines
    (root / "run.json").write_text(json.dumps(doc))
    assert "images/s per device" not in show(str(root)).output


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_show_a_failed_or_interrupted_run_exits_1_saying_so(finished_run, tmp_path, status):
    root = finished_run.copy(tmp_path / "run")
    (root / "_SUCCESS").unlink()
    doc = json.loads((root / "run.json").read_text())
    doc.update(status=status, error="concept 'digit-five': boom")
    (root / "run.json").write_text(json.dumps(doc))
    res = show(str(root))
    assert res.exit_code == 1, res.output
    assert f"status: {status.upper()}" in res.output and "boom" in res.output


def test_show_a_folder_that_is_not_a_run_exits_2(tmp_path):
    res = show(str(tmp_path))
    assert res.exit_code == 2
    assert "is not a normguide run" in res.output
    (tmp_path / "run.json").write_text("not json")
    assert show(str(tmp_path)).exit_code == 2


def test_show_on_s3(finished_run, s3_server, s3_bucket, monkeypatch):
    client = s3_server.client()
    for path in finished_run.root.rglob("*"):
        if path.is_file():
            client.put_object(Bucket=s3_bucket, Key=f"r/{path.relative_to(finished_run.root)}", Body=path.read_bytes())
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.storage["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.storage["secret"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.storage["region_name"])
    endpoint = ["--endpoint-url", s3_server.storage["endpoint_url"]]
    res = show(f"s3://{s3_bucket}/r", *endpoint)
    assert res.exit_code == 0, res.output
    assert f"run {json.loads((finished_run.root / 'run.json').read_text())['run_id']}" in res.output
    assert show(f"s3://{s3_bucket}/nothing-here", *endpoint).exit_code == 2


def test_report_artifact_links_local_pictures_and_draws_http_ones(finished_run, tmp_path):
    from normguide.tasks.reporting import report_artifact_markdown

    record = write_report(finished_run.context(finished_run.copy(tmp_path / "run")).storage)
    md = report_artifact_markdown(record)
    assert "![" not in md and f"[`{record.concepts[0].contact_sheet_uri}`]" in md
    assert "not web addresses" in md
    assert f"[report/index.html]({record.output_root}/report/index.html)" in md  # the HTML report, linked
    web = record.model_copy(update={
        "output_root": "https://example.org/run",
        "concepts": [c.model_copy(update={"contact_sheet_uri": f"https://example.org/run/{c.concept_id}.png",
                                          "seed_norms_uri": f"https://example.org/run/{c.concept_id}-n.png"})
                     for c in record.concepts]})
    md = report_artifact_markdown(web)
    assert "![contact sheet of digit-two](https://example.org/run/digit-two.png)" in md
    assert "not web addresses" not in md


@pytest.mark.slow
def test_publish_report_creates_the_artifact(finished_run, tmp_path, prefect_api):
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from normguide.tasks.reporting import publish_report

    record = write_report(finished_run.context(finished_run.copy(tmp_path / "run")).storage)

    @flow
    def publish():
        return publish_report(record)

    md = publish()
    assert "digit-two" in md

    async def latest():
        async with get_client() as client:
            return await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["normguide-dataset-report"])))

    import asyncio

    found = asyncio.run(latest())
    assert found and any("digit-two" in (a.data or "") for a in found)


def test_show_a_run_whose_process_was_killed_says_interrupted_at_once(finished_run, tmp_path):
    """run.json still says running after a kill -9; its lease (not run out for minutes) names a
    process of this host that is gone: show says interrupted, not running."""
    import subprocess
    import sys

    root = finished_run.copy(tmp_path / "run")
    (root / "_SUCCESS").unlink()
    doc = json.loads((root / "run.json").read_text())
    doc.update(status="running")
    (root / "run.json").write_text(json.dumps(doc))
    hold = ("import os, sys; from normguide.data.storage import Storage; "
            "Storage.open(sys.argv[1]).acquire_lease(ttl_s=600, auto_renew=False, owner='run x'); os._exit(0)")
    subprocess.run([sys.executable, "-c", hold, str(root)], check=True, timeout=120)
    assert (root / "_LEASE").exists()
    res = show(str(root))
    assert res.exit_code == 1, res.output
    assert "status: INTERRUPTED" in res.output and "its process is gone" in res.output
    # a live holder (this process) is a running run
    (root / "_LEASE").unlink()
    from normguide.data.storage import Storage

    with Storage.open(str(root)).acquire_lease(ttl_s=600, auto_renew=False, owner="run y"):
        res = show(str(root))
    assert "status: RUNNING" in res.output and "its lease is live" in res.output
