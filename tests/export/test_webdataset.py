"""The WebDataset export read with the real ``webdataset`` library, locally and from S3; its
per-shard index and stats; byte-identical resumes after an interrupted export."""

from __future__ import annotations

import hashlib
import io
import json
import math
import shlex
import shutil
import sys
import tarfile

import pandas as pd
import pytest

from normguide.data import manifest as mf
from normguide.data.storage import LocalStorage, Storage
from normguide.export import export_run, load_snippet
from normguide.pipeline import RunContext

from .conftest import read_parquet_bytes

wds = pytest.importorskip("webdataset")


def _same(col, got, exp) -> bool:
    if col == "created_at":
        return pd.Timestamp(got) == exp
    if exp is None or (isinstance(exp, float) and math.isnan(exp)):
        return got is None
    return got == (exp.tolist() if hasattr(exp, "tolist") else exp)


def check_samples(samples: list[dict], manifest: pd.DataFrame) -> None:
    """One sample per manifest row, in manifest order: png bytes with the row's sha256, json = the row."""
    assert len(samples) == len(manifest)
    for s, (_, row) in zip(samples, manifest.iterrows()):
        assert s["__key__"] == f"{row.concept_id}/{row.image_id}"
        assert hashlib.sha256(s["png"]).hexdigest() == row.sha256
        doc = json.loads(s["json"])
        assert list(doc) == list(mf.COLUMNS)
        assert all(_same(c, doc[c], row[c]) for c in mf.COLUMNS), s["__key__"]


def _pattern(root, n: int) -> str:
    return f"{root}/webdataset/shard-{{00000..{n - 1:05d}}}.tar"


def test_shards_load_with_webdataset(run_copy):
    run, ctx = run_copy
    assert export_run(ctx.storage, ["webdataset"], shard_size=5) == {"webdataset": f"{run.root}/webdataset"}
    manifest = run.manifest()  # 12 rows -> shards of 5, 5, 2
    names = sorted(p.name for p in (run.root / "webdataset").iterdir())
    assert names == ["_SUCCESS"] + [f"shard-{i:05d}{ext}" for i in range(3)
                                    for ext in (".parquet", ".stats.json", ".tar")]
    samples = list(wds.WebDataset(_pattern(run.root, 3), shardshuffle=False))
    check_samples(samples, manifest)
    # the printed snippet is that very call
    snippet = load_snippet("webdataset", f"{run.root}/webdataset", num_shards=3)
    assert snippet == f'webdataset.WebDataset("{_pattern(run.root, 3)}", shardshuffle=False)'
    assert len(list(eval(snippet, {"webdataset": wds}))) == len(manifest)

    # per shard: the index lists its rows with byte ranges into the tar; the stats describe it
    start = 0
    for i, n in enumerate((5, 5, 2)):
        tar_bytes = (run.root / f"webdataset/shard-{i:05d}.tar").read_bytes()
        index = pd.read_parquet(run.root / f"webdataset/shard-{i:05d}.parquet")
        assert len(index) == n
        assert list(index.columns) == ["key", "json_offset", "json_size", "png_offset", "png_size", *mf.COLUMNS]
        rows = manifest.iloc[start:start + n].reset_index(drop=True)
        assert (index.sha256 == rows.sha256).all() and (index.image_id == rows.image_id).all()
        for r in index.itertuples():
            png = tar_bytes[r.png_offset:r.png_offset + r.png_size]
            assert hashlib.sha256(png).hexdigest() == r.sha256
            assert json.loads(tar_bytes[r.json_offset:r.json_offset + r.json_size])["image_id"] == r.image_id
        stats = json.loads((run.root / f"webdataset/shard-{i:05d}.stats.json").read_text())
        assert stats["samples"] == n and stats["tar_bytes"] == len(tar_bytes)
        assert stats["tar_sha256"] == hashlib.sha256(tar_bytes).hexdigest()
        assert (stats["first_key"], stats["last_key"]) == (index.key.iloc[0], index.key.iloc[-1])
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            members = tar.getmembers()
        assert {(m.uid, m.gid, m.uname, m.gname, m.mode) for m in members} == {(0, 0, "", "", 0o644)}
        start += n


def _s3_env(monkeypatch, s3_server) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region_name)
    for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def test_s3_shards_stream_through_a_pipe(s3_run_copy, s3_server, monkeypatch):
    run, ctx, uri = s3_run_copy
    assert export_run(ctx.storage, ["webdataset"], shard_size=5) == {"webdataset": f"{uri}/webdataset"}
    _s3_env(monkeypatch, s3_server)
    # WebDataset reads remote shards from a command's stdout (pipe:); here s3fs prints the object
    cat = f"import s3fs,sys; sys.stdout.buffer.write(s3fs.S3FileSystem(endpoint_url={s3_server.endpoint_url!r}).cat(sys.argv[1]))"
    url = f"pipe:{shlex.quote(sys.executable)} -c {shlex.quote(cat)} {_pattern(uri, 3)}"
    check_samples(list(wds.WebDataset(url, shardshuffle=False)), run.manifest())


@pytest.mark.skipif(shutil.which("aws") is None, reason="the aws CLI is not installed")
def test_s3_snippet_with_the_aws_cli(s3_run_copy, s3_server, monkeypatch):
    run, ctx, uri = s3_run_copy
    export_run(ctx.storage, ["webdataset"], shard_size=5)
    _s3_env(monkeypatch, s3_server)
    snippet = load_snippet("webdataset", f"{uri}/webdataset", endpoint_url=s3_server.endpoint_url, num_shards=3)
    assert snippet.startswith('webdataset.WebDataset("pipe:aws s3 cp --endpoint-url ')
    check_samples(list(eval(snippet, {"webdataset": wds})), run.manifest())


# -- resume -------------------------------------------------------------------------------------
class KilledStorage(LocalStorage):
    """A local root whose process 'dies' (BaseException, like a kill) right before its
    ``n``-th write under ``prefix``."""

    def __init__(self, root: str, *, n: int, prefix: str) -> None:
        super().__init__(root)
        self.left, self.prefix = n, prefix

    def write_bytes(self, key: str, data: bytes) -> str:
        if key.startswith(self.prefix):
            self.left -= 1
            if self.left == 0:
                raise KeyboardInterrupt(f"killed before writing {key}")
        return super().write_bytes(key, data)


def _tree(root, folder: str) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / folder).rglob("*")) if p.is_file()}


@pytest.mark.parametrize("folder, n", [("webdataset/", 4), ("webdataset/", 7), ("hf/", 2), ("hf/", 5)])
def test_killed_export_resumes_to_the_same_bytes(run_copy, finished_run, tmp_path, folder, n):
    run, _ = run_copy
    fmt = folder.rstrip("/")
    # an uninterrupted export in another copy of the run
    other = tmp_path / "other"
    shutil.copytree(finished_run.root, other)
    export_run(Storage.open(str(other)), [fmt], shard_size=5)
    # killed mid-export, then run again
    killed = RunContext.create(run.config, storage=KilledStorage(str(run.root), n=n, prefix=folder))
    with pytest.raises(KeyboardInterrupt):
        export_run(killed.storage, [fmt], shard_size=5)
    assert not (run.root / folder / "_SUCCESS").exists()
    written = _tree(run.root, fmt)
    export_run(Storage.open(str(run.root)), [fmt], shard_size=5)
    assert _tree(run.root, fmt) == _tree(other, fmt)
    assert f"{fmt}/_STARTED" in written and f"{fmt}/_STARTED" not in _tree(run.root, fmt)  # the start record goes
    assert all(_tree(run.root, fmt)[k] == v for k, v in written.items() if k != f"{fmt}/_STARTED")  # nothing complete was rewritten


def test_lost_marker_and_partial_tar_are_redone(run_copy):
    run, ctx = run_copy
    export_run(ctx.storage, ["webdataset"], shard_size=5)
    before = _tree(run.root, "webdataset")
    wd = run.root / "webdataset"
    # a crash between the shard's files: no stats (marker), no _SUCCESS, a half-written temporary tar
    (wd / "shard-00001.stats.json").unlink()
    (wd / "_SUCCESS").unlink()
    (wd / "shard-00001.tar").write_bytes(before["webdataset/shard-00001.tar"][:1000])
    (wd / ".shard-00001.tar.0123456789ab.normguide-tmp").write_bytes(b"partial")
    export_run(ctx.storage, ["webdataset"], shard_size=5)
    after = _tree(run.root, "webdataset")
    after.pop("webdataset/.shard-00001.tar.0123456789ab.normguide-tmp")  # invisible to the storage's listings
    assert after == before


def test_finished_export_is_a_noop_and_other_settings_are_refused(run_copy):
    run, ctx = run_copy
    export_run(ctx.storage, ["webdataset", "hf"], shard_size=5)
    before = {**_tree(run.root, "webdataset"), **_tree(run.root, "hf")}
    mtimes = {p: p.stat().st_mtime_ns for p in run.root.rglob("*") if p.is_file()}
    export_run(ctx.storage, ["hf", "webdataset"], shard_size=5)
    assert {p: p.stat().st_mtime_ns for p in run.root.rglob("*") if p.is_file()} == mtimes
    for fmt in ("webdataset", "hf"):
        with pytest.raises(ValueError, match=rf"{run.root}/{fmt} already holds .*shard_size: 5 there, 4 asked"):
            export_run(ctx.storage, [fmt], shard_size=4)
    # a folder with shards of another layout and no _SUCCESS: refused, naming a stray file
    (run.root / "webdataset/_SUCCESS").unlink()
    with pytest.raises(ValueError, match=r"holds 3 file\(s\) this export would not write .*shard-00002"):
        export_run(ctx.storage, ["webdataset"], shard_size=6)
    assert {**_tree(run.root, "webdataset"), **_tree(run.root, "hf")} == {
        k: v for k, v in before.items() if k != "webdataset/_SUCCESS"}
    read_parquet_bytes((run.root / "webdataset/shard-00000.parquet").read_bytes())  # intact
