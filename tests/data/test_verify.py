"""`normguide verify` (issue 25): a complete run's manifest rows have their images with their
sha256, every part is readable, nothing is orphaned; on local disk and S3."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from normguide.cli import app
from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from normguide.data.storage import Storage
from normguide.data.verify import verify_run
from normguide.pipeline import run_dataset
from tests.helpers import make_reference


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A complete tiny run (2 concepts x 2 images), made once; tests copy it."""
    folder = tmp_path_factory.mktemp("verify")
    rows = [{"concept_id": c, "name": c, "reference_uris": [str(make_reference(folder / f"{c}.png", seed=i))]}
            for i, c in enumerate(("alpha", "beta"))]
    write_concept_table(rows, folder / "t.parquet")
    cfg = RunConfig.model_validate({
        "concepts": str(folder / "t.parquet"), "output": str(folder / "out"), "model": "demo:sd1", "run_id": "r",
        "inversion": {"num_inference_steps": 2, "reconstruction": False},
        "generation": {"num_inference_steps": 2, "batch_size": 2}, "plan": {"methods": ["nao"], "num_images": 2},
        "evaluation": {"enabled": False}})
    assert run_dataset(cfg).status == "complete"
    return folder / "out" / "r"


@pytest.fixture(params=["local", "s3"])
def run_copy(request, finished_run, tmp_path):
    """(storage, uri, endpoint) of a fresh copy of the finished run on each backend."""
    src = Storage.open(str(finished_run))
    files = [(k, src.read_bytes(k)) for k in src.list()]
    if request.param == "local":
        st, endpoint = Storage.open(str(tmp_path / "r")), None
    else:
        s3_server, bucket = request.getfixturevalue("s3_server"), request.getfixturevalue("s3_bucket")
        for k, v in s3_server.aws_env.items():
            request.getfixturevalue("monkeypatch").setenv(k, v)
        st = Storage.open(f"s3://{bucket}/runs/r", storage_config=s3_server.storage_config(key=None, secret=None))
        endpoint = s3_server.endpoint_url
    st.write_many(files)
    return st, st.root, endpoint


def test_verify_names_damaged_images_and_orphans(run_copy):
    st, uri, endpoint = run_copy
    assert verify_run(st).ok and verify_run(st).images == 4
    alpha = sorted(k for k in st.list("images/alpha"))
    beta = sorted(k for k in st.list("images/beta"))
    st.delete([alpha[0]])                               # deleted
    st.write_bytes(alpha[1], st.read_bytes(alpha[1])[:50])  # truncated: same name, other bytes
    st.write_bytes("images/gamma/x.png", b"png")         # a removed concept's leftovers
    st.write_bytes("seeds/gamma.safetensors", b"s")
    st.write_bytes("manifest/part-gamma.parquet", b"p")
    st.write_bytes(f"{beta[0].rsplit('/', 1)[0]}/stray.png", b"png")  # not in the manifest
    quick, full = verify_run(st, full=False), verify_run(st)
    assert quick.damaged == {alpha[0]: "missing"}  # the quick check sees only what is gone or empty
    assert set(full.damaged) == {alpha[0], alpha[1]} and "sha256" in full.damaged[alpha[1]]
    assert full.orphans == sorted(["images/beta/stray.png", "images/gamma/x.png", "manifest/part-gamma.parquet",
                                   "seeds/gamma.safetensors"])
    args = ["verify", uri] + (["--endpoint-url", endpoint] if endpoint else [])
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and f"{uri}/{alpha[1]}" in res.output and "orphaned" in res.output, res.output


def test_repair_deletes_damage_moves_orphans_aside_and_a_rerun_heals(run_copy, finished_run):
    st, uri, endpoint = run_copy
    record = json.loads(st.read_bytes("run.json"))
    alpha = sorted(st.list("images/alpha"))
    original = st.read_bytes(alpha[1])
    st.write_bytes(alpha[1], original[:50])              # truncated
    st.write_bytes("images/gamma/x.png", b"png")         # a removed concept's leftovers
    st.write_bytes("seeds/gamma.safetensors", b"s")
    args = ["verify", uri, "--repair"] + (["--endpoint-url", endpoint] if endpoint else [])
    res = CliRunner().invoke(app, args, env={"COLUMNS": "300"})
    assert res.exit_code == 1, res.output  # a rerun must regenerate alpha
    assert "to regenerate: alpha; rerun `normguide run`" in res.output, res.output
    left = set(st.list())
    assert alpha[1] not in left and "manifest/part-alpha.parquet" not in left  # damaged: deleted
    assert "_SUCCESS" not in left and "manifest.parquet" not in left and "manifest/part-beta.parquet" in left
    assert st.read_bytes("_removed/images/gamma/x.png") == b"png" and "images/gamma/x.png" not in left  # moved aside
    assert "_removed/seeds/gamma.safetensors" in left and "seeds/gamma.safetensors" not in left
    assert json.loads(st.read_bytes("run.json"))["status"] == "interrupted"

    # the rerun makes alpha's missing image again and finalizes; verify passes
    cfg = RunConfig.model_validate(record["config"])
    summary = run_dataset(cfg, storage=st)
    assert summary.status == "complete" and summary.finalized, summary
    assert sorted(st.list("images/alpha")) == alpha and st.read_bytes(alpha[1]) != original[:50] and verify_run(st).ok
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0 and "verified" in res.output, res.output


def test_run_on_a_complete_run_finds_a_deleted_image_and_remakes_it(run_copy, caplog):
    """The quick check inside `run` (one read of the manifest, one listing per concept folder):
    a complete run whose image was deleted is not "already complete"; it is remade and finalized."""
    st, uri, endpoint = run_copy
    cfg = RunConfig.model_validate(json.loads(st.read_bytes("run.json"))["config"])
    assert run_dataset(cfg, storage=st).already_complete  # intact: a no-op, as before
    beta = sorted(st.list("images/beta"))
    st.delete([beta[0]])
    with caplog.at_level("WARNING", logger="normguide"):
        summary = run_dataset(cfg, storage=st)
    assert not summary.already_complete and summary.finalized and summary.status == "complete", summary
    assert f"{beta[0]} (missing)" in caplog.text and "made again" in caplog.text, caplog.text
    assert sorted(st.list("images/beta")) == beta and verify_run(st).ok
    assert json.loads(st.read_bytes("run.json"))["status"] == "complete" and st.exists("_SUCCESS")
