"""The hf export loaded with the real ``datasets`` library: from the files, through the dataset
card's configs, and from S3."""

from __future__ import annotations

import hashlib
import json
import math
import os
import subprocess
import sys

import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from normguide.data import manifest as mf
from normguide.export import export_run, hf_card_yaml

from .conftest import CONCEPTS, METHODS

datasets = pytest.importorskip("datasets")


def _raw(ds):
    """The dataset with undecoded images ({'bytes', 'path'})."""
    return ds.cast_column("image", datasets.Image(decode=False))


def _same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if hasattr(a, "tolist"):
        a = a.tolist()
    if hasattr(b, "tolist"):
        b = b.tolist()
    return a == b


def check_against_manifest(ds, manifest: pd.DataFrame, *, methods=METHODS) -> None:
    """Counts, the ClassLabel, every manifest column's type and values, every image's sha256."""
    expected = manifest[manifest.method.isin(methods)]
    assert ds.num_rows == len(expected) > 0
    label = ds.features["label"]
    assert isinstance(label, datasets.ClassLabel) and label.names == sorted(CONCEPTS)
    assert isinstance(ds.features["image"], datasets.Image)
    # every manifest column, with the type datasets gives the manifest's Arrow type
    want = datasets.Features.from_arrow_schema(mf.MANIFEST_SCHEMA)
    assert list(ds.features)[2:] == list(mf.COLUMNS)
    assert {c: ds.features[c] for c in mf.COLUMNS} == dict(want)
    by_key = expected.set_index(["concept_id", "image_id"])
    seen = set()
    for row in _raw(ds):
        key = (row["concept_id"], row["image_id"])
        seen.add(key)
        m = by_key.loc[key]
        assert hashlib.sha256(row["image"]["bytes"]).hexdigest() == m.sha256 == row["sha256"]
        assert row["image"]["path"] == mf.image_key(*key)
        assert label.int2str(row["label"]) == row["concept_id"]
        for col in mf.COLUMNS:
            if col in ("concept_id", "image_id"):
                continue
            got, exp = row[col], m[col]
            if col == "created_at":
                assert pd.Timestamp(got) == exp
            else:
                assert _same(got, exp) or (got is None and (exp is None or (isinstance(exp, float) and math.isnan(exp)))), (col, got, exp)
    assert len(seen) == len(expected)


def test_parquet_files_load_with_datasets(run_copy):
    run, ctx = run_copy
    uris = export_run(ctx.storage, ["hf"], shard_size=4)
    assert uris == {"hf": f"{run.root}/hf"}
    # 6 images per method -> 2 files of at most 4 rows each, per method
    files = sorted(p.relative_to(run.root).as_posix() for p in (run.root / "hf").rglob("*.parquet"))
    assert files == [f"hf/{m}/train-{i:05d}-of-00002.parquet" for m in METHODS for i in range(2)]
    assert [pq.ParquetFile(run.root / f).metadata.num_rows for f in files] == [4, 2, 4, 2]
    manifest = run.manifest()
    ds = datasets.load_dataset("parquet", data_files=f"{run.root}/hf/*/train-*.parquet", split="train")
    check_against_manifest(ds, manifest)
    nao = datasets.load_dataset("parquet", data_files=f"{run.root}/hf/nao/train-*.parquet", split="train")
    check_against_manifest(nao, manifest, methods=("nao",))
    # decoded, the images are the PNGs the run wrote
    assert ds[0]["image"].size == (ds[0]["width"], ds[0]["height"])


def test_card_configs_load_the_run_root(run_copy):
    run, ctx = run_copy
    export_run(ctx.storage, ["hf"], shard_size=4)
    header = hf_card_yaml(pq.read_table(run.root / "manifest.parquet"))
    assert [c["config_name"] for c in header["configs"]] == ["default", *METHODS]
    (run.root / "README.md").write_text("---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n\n# test card\n")
    manifest = run.manifest()
    check_against_manifest(datasets.load_dataset(str(run.root), split="train"), manifest)
    for method in METHODS:
        ds = datasets.load_dataset(str(run.root), method, split="train")
        check_against_manifest(ds, manifest, methods=(method,))
    infos = {i["config_name"]: i for i in header["dataset_info"]}
    assert infos["default"]["splits"] == [{"name": "train", "num_examples": len(manifest)}]
    # the card's split sizes are what datasets counts (its full verification compares them)
    for name in ("default", *METHODS):
        ds = datasets.load_dataset(str(run.root), name, split="train", verification_mode="all_checks",
                                   download_mode="force_redownload")
        assert ds.num_rows == infos[name]["splits"][0]["num_examples"] == (manifest.method.isin(
            METHODS if name == "default" else [name])).sum()
    # a DataFrame works as well as an Arrow table
    assert hf_card_yaml(manifest) == header


def test_s3_run_loads_with_datasets(s3_run_copy, s3_server, tmp_path):
    run, ctx, uri = s3_run_copy
    assert export_run(ctx.storage, ["hf"], shard_size=4) == {"hf": f"{uri}/hf"}
    opts = {"endpoint_url": s3_server.endpoint_url, "key": s3_server.key, "secret": s3_server.secret}
    # datasets refuses every remote URL, s3:// included, in offline mode (HF_HUB_OFFLINE=1 or
    # TRANSFORMERS_OFFLINE=1, which CI sets), and reads that setting once at import: the load runs
    # as its own process, online as a user's would be (it reaches only the local S3 server), and
    # hands the dataset back on disk
    code = ("import datasets, json, sys; a = json.loads(sys.argv[1]); "
            "datasets.load_dataset('parquet', data_files=a['files'], split='train', "
            "storage_options=a['opts']).to_parquet(a['out'])")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    args = json.dumps({"files": f"{uri}/hf/*/train-*.parquet", "opts": opts, "out": str(tmp_path / "loaded.parquet")})
    res = subprocess.run([sys.executable, "-c", code, args], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    ds = datasets.Dataset.from_parquet(str(tmp_path / "loaded.parquet"))
    check_against_manifest(ds, run.manifest())
    assert not (run.root / "hf").exists()  # written to S3, not next to the local copy
