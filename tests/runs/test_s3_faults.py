"""The S3 endpoint (the real moto server process) goes down in the middle of a run's generation.

The endpoint is taken down by stopping the TCP front of tests/conftest.py's server (the buckets
survive); a watcher thread, reading the bucket through the server's own port, stops it as soon
as the first generated image is stored.
"""

from __future__ import annotations

import threading
import time

import boto3
import pytest

from normguide.pipeline import output_root

from .conftest import (
    CONCEPTS,
    assert_same_dataset,
    check_consistent,
    run_config,
    run_flow,
    snapshot,
)

pytestmark = pytest.mark.slow  # the slow tier (pyproject.toml)

NUM_IMAGES = 8




def _backend(s3_server):
    """A client on the server's own port: it sees the bucket while the endpoint is down."""
    return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3_server.backend_port}",
                        region_name=s3_server.region_name,
                        aws_access_key_id=s3_server.key, aws_secret_access_key=s3_server.secret)


def _objects(s3_server, bucket: str, prefix: str) -> dict[str, bytes]:
    client = _backend(s3_server)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]
    return {k[len(prefix):]: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}


class Outage(threading.Thread):
    """Stop the endpoint once an image exists under ``prefix``; bring it back after ``down_for``
    seconds (never, if None)."""

    def __init__(self, s3_server, bucket: str, prefix: str, down_for: float | None) -> None:
        super().__init__(daemon=True)
        self.server, self.bucket, self.prefix, self.down_for = s3_server, bucket, prefix + "images/", down_for
        self.stopped_at: float | None = None
        self.images_when_stopped = -1
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            client = _backend(self.server)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                n = client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix).get("KeyCount", 0)
                if n:
                    self.server.stop()
                    self.stopped_at, self.images_when_stopped = time.monotonic(), n
                    break
                time.sleep(0.01)
            if self.stopped_at is not None and self.down_for is not None:
                time.sleep(self.down_for)
                self.server.start()
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc


def _s3_config(inputs, s3_server, bucket: str, retry_seconds: float):
    return run_config(inputs.s3_table, f"s3://{bucket}/datasets",
                      storage={**s3_server.env_storage, "retry_seconds": retry_seconds},
                      **{"plan.num_images": NUM_IMAGES})


def _clean_run(inputs, s3_server, tmp_path):
    """The reference: the same configuration, uninterrupted, with local output."""
    cfg = run_config(inputs.s3_table, str(tmp_path / "clean"), storage=s3_server.env_storage,
                     **{"plan.num_images": NUM_IMAGES})
    state, summary = run_flow(cfg)
    assert state.is_completed(), summary
    return snapshot(cfg)


def test_endpoint_down_and_back_within_retry_budget(inputs, s3_server, s3_bucket, tmp_path):
    cfg = _s3_config(inputs, s3_server, s3_bucket, retry_seconds=30)
    prefix = output_root(cfg)[len(f"s3://{s3_bucket}/"):] + "/"
    outage = Outage(s3_server, s3_bucket, prefix, down_for=3.0)
    outage.start()
    t0 = time.monotonic()
    state, summary = run_flow(cfg)
    outage.join(timeout=60)
    assert outage.error is None, outage.error
    assert outage.stopped_at is not None, "the endpoint was never taken down"
    assert outage.images_when_stopped < NUM_IMAGES * len(CONCEPTS), "outage came after generation"
    assert state.is_completed(), summary
    assert time.monotonic() - t0 > 3.0
    assert s3_server.running

    objects = _objects(s3_server, s3_bucket, prefix)
    check_consistent(objects)
    assert_same_dataset(objects, _clean_run(inputs, s3_server, tmp_path))


def test_endpoint_stays_down_fails_clearly_then_rerun_completes(inputs, s3_server, s3_bucket, tmp_path):
    cfg = _s3_config(inputs, s3_server, s3_bucket, retry_seconds=2)
    root = output_root(cfg)
    prefix = root[len(f"s3://{s3_bucket}/"):] + "/"
    outage = Outage(s3_server, s3_bucket, prefix, down_for=None)
    outage.start()
    try:
        state, summary = run_flow(cfg)
        outage.join(timeout=60)
        assert outage.error is None, outage.error
        assert outage.stopped_at is not None, "the endpoint was never taken down"
        assert not s3_server.running

        # the run failed, and every concept's error names the endpoint and the key
        assert state.is_failed(), summary
        assert sorted(summary.failed) == sorted(CONCEPTS)
        for cid in CONCEPTS:
            err = summary.concepts[cid].error
            assert "StorageError" in err and s3_server.endpoint_url in err, err
            assert f"{root}/" in err and "gave up after retrying for 2 s" in err, err
            assert s3_server.secret not in err and s3_server.key not in err

        # what was written is consistent: no part without its images, no manifest, no _SUCCESS
        written = _objects(s3_server, s3_bucket, prefix)
        check_consistent(written)
        assert "_SUCCESS" not in written and "manifest.parquet" not in written
        assert any(k.startswith("images/") for k in written)
    finally:
        s3_server.start()

    # back up: the rerun (default retry budget) completes and equals a clean run
    state, summary = run_flow(cfg.with_overrides(**{"storage.retry_seconds": None}))
    assert state.is_completed(), summary
    resumed = _objects(s3_server, s3_bucket, prefix)
    for k, v in written.items():
        if k.startswith("images/"):
            assert resumed[k] == v, k
    check_consistent(resumed)
    assert_same_dataset(resumed, _clean_run(inputs, s3_server, tmp_path))
