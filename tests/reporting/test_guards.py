"""Small guards (issue 25, item 11): a missing bucket is named as such, a manifest without its
sha256 column stops an export with a clear error, and paths that are not what they look like are
refused instead of becoming folders."""

from __future__ import annotations

import os

import pyarrow.parquet as pq
import pytest

from normguide.config import RunConfig
from normguide.data.storage.uris import check_output_root, check_uri_scheme, local_path
from tests.reporting.test_show import show


def test_show_names_a_missing_bucket(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.storage["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.storage["secret"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.storage["region_name"])
    res = show("s3://no-such-bucket-25/run", "--endpoint-url", s3_server.storage["endpoint_url"])
    assert res.exit_code == 2, res.output
    assert "the bucket 'no-such-bucket-25' does not exist" in res.output  # today: "is not a normguide run"


def test_export_of_a_manifest_without_sha256_names_the_file(finished_run, tmp_path):
    from normguide.export import export_run

    root = finished_run.copy(tmp_path / "run")
    table = pq.read_table(root / "manifest.parquet")
    pq.write_table(table.drop(["sha256"]), root / "manifest.parquet")
    with pytest.raises(ValueError, match=r"manifest.parquet lacks the column\(s\) \['sha256'\] an export needs"):
        export_run(finished_run.context(root).storage, ["webdataset"])  # today: a bare KeyError


@pytest.mark.parametrize("uri, why", [("file:/tmp/x", "looks like a URI"), ("C:\\runs", "Windows drive path"),
                                      ("c:/runs", "Windows drive path"), ("s3:bucket/x", "looks like a URI")])
def test_near_uris_are_refused_not_made_folders(tmp_path, monkeypatch, uri, why):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match=why):
        check_output_root(uri)
    with pytest.raises(ValueError, match=f"output: .*{why}"):
        RunConfig(output=uri)
    with pytest.raises(ValueError, match=why):
        check_uri_scheme(uri, field="reference_uris of concept 'c'")
    assert list(tmp_path.iterdir()) == []
    check_output_root(f"./{uri}")  # spelled as a local folder, it is one


def test_dot_dot_is_resolved_after_symlinks(tmp_path, monkeypatch):
    real = tmp_path / "a" / "b"
    real.mkdir(parents=True)
    (tmp_path / "link").symlink_to(real)
    # textually link/.. is tmp_path; after the symlink it is tmp_path/a
    assert local_path(str(tmp_path / "link" / ".." / "out")) == str(tmp_path / "a" / "out")
    monkeypatch.chdir(real)
    assert local_path("/proc/self/cwd/..") == str(tmp_path / "a")  # today: /proc/self
    assert local_path(str(tmp_path / "link")) == str(tmp_path / "link")  # no '..': kept as given
    assert os.path.isdir(local_path("/proc/self/cwd/.."))
