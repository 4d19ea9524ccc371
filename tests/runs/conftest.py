"""Whole runs of the dataset flow: S3 in and out, resume after a kill, endpoint faults, bad input.

Everything runs on the demo model with 2 inference steps, against the session's Prefect test
harness and the real moto S3 server process of tests/conftest.py (no patching of botocore).

Fixtures and helpers:

* ``inputs`` (module): a concept table with two concepts (``alpha``, ``beta``; two reference
  PNGs each) on local disk, and the same table with ``s3://`` reference URIs uploaded, with
  its references, to a module-wide input bucket.
* :func:`run_config`: a tiny RunConfig (reconstruction off, batch size 1, 5 images per concept).
* :func:`snapshot`: every object under a run's output root, as ``{key: bytes}``.
* :func:`check_consistent`: the invariants that hold at every moment of a run, finished or not.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from normguide.data.storage import Storage
from tests.helpers import make_reference

CONCEPTS = {"alpha": 2, "beta": 2}
#: Manifest columns that legitimately differ between two runs of the same configuration: none
#: (the manifest holds no timestamps; tests/runs/test_idempotency.py checks the bytes).
VOLATILE: list[str] = []


@pytest.fixture(scope="session", autouse=True)
def _prefect(prefect_api):
    """Every test here runs against the session's Prefect test harness (tests/conftest.py)."""
    yield prefect_api


@pytest.fixture(autouse=True)
def _aws_env(s3_server, monkeypatch):
    """S3 credentials from the environment of the flow's process, never as flow parameters
    (configs here use ``s3_server.env_storage``: endpoint and region only)."""
    for name, value in s3_server.aws_env.items():
        monkeypatch.setenv(name, value)


@dataclass
class Inputs:
    local_dir: Path
    local_table: str  # concept table with local reference paths
    bucket: str
    s3_table: str  # the same concepts, table and references on S3


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, s3_server) -> Inputs:
    s3_server.start()
    root = tmp_path_factory.mktemp("inputs")
    bucket = s3_server.create_bucket()
    client = s3_server.client()
    local_rows, s3_rows = [], []
    for k, (cid, n) in enumerate(CONCEPTS.items()):
        refs = [make_reference(root / f"refs/{cid}/{i}.png", seed=100 * k + i) for i in range(n)]
        s3_refs = []
        for r in refs:
            key = f"inputs/{r.relative_to(root)}"
            client.put_object(Bucket=bucket, Key=key, Body=r.read_bytes())
            s3_refs.append(f"s3://{bucket}/{key}")
        local_rows.append({"concept_id": cid, "name": cid, "reference_uris": [str(r) for r in refs]})
        s3_rows.append({"concept_id": cid, "name": cid, "reference_uris": s3_refs})
    write_concept_table(local_rows, root / "concepts.parquet")
    write_concept_table(s3_rows, root / "concepts-s3.parquet")
    client.put_object(Bucket=bucket, Key="inputs/concepts.parquet", Body=(root / "concepts-s3.parquet").read_bytes())
    return Inputs(root, str(root / "concepts.parquet"), bucket, f"s3://{bucket}/inputs/concepts.parquet")


def run_config(concepts: str, output: str, storage: dict[str, Any] | None = None, **overrides: Any) -> RunConfig:
    """A tiny run: demo model, 2 inversion and 2 generation steps, batch size 1, 5 images each."""
    base = RunConfig.model_validate(
        {
            "concepts": concepts,
            "output": output,
            "model": "demo",
            "inversion": {"num_inference_steps": 2, "reconstruction": False, "batch_size": 2},
            "generation": {"num_inference_steps": 2, "guidance_scale": 2.0, "batch_size": 1},
            "plan": {"methods": ["nao"], "num_images": 5},
            "storage": storage or {},
        }
    )
    return base.with_overrides(**overrides)


def run_flow(cfg: RunConfig):
    """(final state, summary or exception) of one in-process run of the flow."""
    from normguide.flows.generate_dataset import generate_dataset

    state = generate_dataset(config=cfg, return_state=True)
    return state, state.result(raise_on_failure=False)


def open_root(cfg: RunConfig, **kw: Any) -> Storage:
    from normguide.pipeline import output_root

    return Storage.open(output_root(cfg), storage_config=cfg.storage, **kw)


def snapshot(cfg: RunConfig) -> dict[str, bytes]:
    """Every object (temporary files excluded) under the run's output root."""
    st = open_root(cfg)
    return {k: st.read_bytes(k) for k in st.list()}


def stable_manifest(data: bytes) -> pd.DataFrame:
    df = pd.read_parquet(io.BytesIO(data))
    return df.drop(columns=VOLATILE).sort_values(["concept_id", "image_id"]).reset_index(drop=True)


def check_consistent(objects: dict[str, bytes]) -> None:
    """Invariants of an output root at any moment (``objects``: key -> bytes under the root).

    A manifest part exists only with every image it lists, each with the recorded hash; no image
    is listed twice; manifest.parquet only with every part (and exactly their rows); _SUCCESS
    only with manifest.parquet.
    """
    parts = {k: v for k, v in objects.items() if k.startswith("manifest/part-")}
    listed: list[str] = []
    for key, data in parts.items():
        df = pd.read_parquet(io.BytesIO(data))
        cid = key[len("manifest/part-"): -len(".parquet")]
        assert (df.concept_id == cid).all(), key
        for row in df.itertuples():
            img = f"images/{cid}/{row.image_id}.png"
            assert img in objects, f"{key} lists {img}, which does not exist"
            assert hashlib.sha256(objects[img]).hexdigest() == row.sha256, img
            assert row.file_name == img, (row.file_name, img)
            listed.append(img)
    assert len(listed) == len(set(listed)), "an image is listed twice"
    if "manifest.parquet" in objects:
        full = pd.read_parquet(io.BytesIO(objects["manifest.parquet"]))
        assert full.file_name.is_unique
        assert len(full) == len(listed) and len(parts) >= 1
    if "_SUCCESS" in objects:
        assert "manifest.parquet" in objects


def assert_same_dataset(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    """Same image ids and bytes, same seeds files, same manifest except timestamps and URIs."""
    keys = lambda objs, prefix: sorted(k for k in objs if k.startswith(prefix))  # noqa: E731
    assert keys(a, "images/") == keys(b, "images/")
    assert keys(a, "manifest/") == keys(b, "manifest/")
    for k in keys(a, "images/") + keys(a, "seeds/"):
        assert a[k] == b[k], k
    pd.testing.assert_frame_equal(stable_manifest(a["manifest.parquet"]), stable_manifest(b["manifest.parquet"]))
    for k in keys(a, "manifest/"):
        pd.testing.assert_frame_equal(stable_manifest(a[k]), stable_manifest(b[k]))
    assert "_SUCCESS" in a and "_SUCCESS" in b


def free_endpoint() -> str:
    """An http:// endpoint on a loopback port where nothing listens."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"
