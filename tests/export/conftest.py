"""Exports of a real, finalized run.

``finished_run`` (session): one small run made with the real local driver on the demo model
(two concepts, one with a dot in its id; methods nao and slerp; 12 images), never written to
after it is made. ``run_copy`` (function): a fresh copy of it under the test's tmp_path, with
a RunContext on it, for a test to export into. ``s3_run_copy``: the same copy uploaded to a
fresh bucket of the moto server (tests/conftest.py).
"""

from __future__ import annotations

import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from normguide.data.storage import Storage
from normguide.pipeline import RunContext, resolved_run_id, run_dataset
from tests.helpers import make_reference

CONCEPTS = ("alpha", "beta.x")
METHODS = ("nao", "slerp")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """The real libraries, offline, with their caches in the test's directory."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@dataclass
class Run:
    config: RunConfig
    root: Path

    @property
    def run_id(self) -> str:
        return resolved_run_id(self.config)

    def manifest(self) -> pd.DataFrame:
        return pd.read_parquet(self.root / "manifest.parquet")


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Run:
    base = tmp_path_factory.mktemp("export-run")
    rows = []
    for k, cid in enumerate(CONCEPTS):
        refs = [str(make_reference(base / f"in/{cid}/{i}.png", seed=10 * k + i)) for i in range(2)]
        rows.append({"concept_id": cid, "name": cid, "reference_uris": refs})
    write_concept_table(rows, base / "in/concepts.parquet")
    cfg = RunConfig.model_validate({
        "concepts": str(base / "in/concepts.parquet"), "output": str(base / "out"), "model": "demo",
        "inversion": {"num_inference_steps": 2, "reconstruction": False, "batch_size": 2},
        "generation": {"num_inference_steps": 2, "guidance_scale": 2.0, "batch_size": 6},
        "plan": {"methods": list(METHODS), "num_images": 3}, "evaluation": {"enabled": False},
    })
    summary = run_dataset(cfg)
    assert summary.finalized and not summary.failed, summary
    root = Path(summary.output_root)
    os.chmod(root, 0o555)  # the tests copy it; nothing may write into the original
    return Run(cfg, root)


@pytest.fixture
def run_copy(finished_run, tmp_path) -> tuple[Run, RunContext]:
    dest = tmp_path / "runs" / finished_run.run_id
    shutil.copytree(finished_run.root, dest)
    os.chmod(dest, 0o755)
    run = Run(finished_run.config, dest)
    return run, RunContext.create(finished_run.config, storage=Storage.open(str(dest)))


def upload(client, bucket: str, prefix: str, root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{path.relative_to(root).as_posix()}", Body=path.read_bytes())


@pytest.fixture
def s3_run_copy(run_copy, s3_server, s3_bucket) -> tuple[Run, RunContext, str]:
    """The run copy uploaded to ``s3://<bucket>/datasets/<run_id>``; a context on the S3 root."""
    run, _ = run_copy
    prefix = f"datasets/{run.run_id}"
    upload(s3_server.client(), s3_bucket, prefix, run.root)
    uri = f"s3://{s3_bucket}/{prefix}"
    cfg = run.config.with_overrides(storage=s3_server.storage)
    return run, RunContext.create(cfg, storage=Storage.open(uri, storage_config=cfg.storage)), uri


def read_parquet_bytes(data: bytes) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(data))
