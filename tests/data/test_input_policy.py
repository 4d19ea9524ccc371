"""The input policy (issue 25, third bullet): a run whose concept table is remote reads
references only under its allowed roots (default: the table's own folder), never files of the
machine that runs it unless a local root is allowed explicitly; every refused reference gets the
same one message, whether or not the file exists, before any model work."""

from __future__ import annotations

import os

import pytest
from typer.testing import CliRunner

from normguide.cli import app
from normguide.config import RunConfig
from normguide.data.schema import ConceptTableError, write_concept_table
from normguide.pipeline import run_dataset
from normguide.pipeline.context import RunContext
from normguide.pipeline import steps
from tests.helpers import make_reference


def _config(concepts: str, output: str, storage: dict, **storage_overrides) -> RunConfig:
    return RunConfig.model_validate({
        "concepts": concepts, "output": output, "model": "demo:sd1", "run_id": "r",
        "storage": {**storage, **storage_overrides},
        "inversion": {"num_inference_steps": 2, "reconstruction": False},
        "generation": {"num_inference_steps": 2, "batch_size": 2}, "plan": {"methods": ["nao"], "num_images": 2},
        "evaluation": {"enabled": False}})


def _no_model():
    raise AssertionError("the model was loaded although a reference was refused")


def _same_message(problems: list[str], uris: list[str]) -> None:
    """Each problem names its URI, and with the URI blanked out all are the same text."""
    blanked = set()
    for problem, uri in zip(problems, uris):
        assert repr(uri) in problem, (problem, uri)
        blanked.add(problem.replace(repr(uri), "<URI>"))
    assert len(blanked) == 1, blanked


@pytest.fixture
def worker_files(tmp_path):
    """Files of the machine that runs the flow: a private image, a folder, a text file."""
    private = make_reference(tmp_path / "worker" / "private.png", seed=3)
    (tmp_path / "worker" / "folder").mkdir()
    (tmp_path / "worker" / "notes.txt").write_text("secret notes")
    return tmp_path / "worker", private


def test_a_remote_table_reads_only_its_own_folder(tmp_path, s3_server, s3_bucket, worker_files):
    worker, private = worker_files
    client = s3_server.client()
    png = private.read_bytes()
    for key in ("in/ok.png", "other/a.png"):
        client.put_object(Bucket=s3_bucket, Key=key, Body=png)
    refused = [
        str(private), str(worker / "missing.png"), str(worker / "folder"), str(worker / "notes.txt"),  # worker paths
        f"file://{private}", f"file://{worker}/missing.png",
        f"s3://{s3_bucket}/other/a.png", f"s3://{s3_bucket}/other/missing.png",  # the bucket, outside the folder
        f"s3://{s3_bucket}/in/../other/a.png",  # a key that leaves the folder once collapsed
        f"s3://{s3_bucket}-other/in/a.png",  # another bucket
    ]
    rows = [{"concept_id": "ok", "name": "ok", "reference_uris": [f"s3://{s3_bucket}/in/ok.png", "ok.png"]},
            {"concept_id": "evil", "name": "evil", "reference_uris": [*refused, "../other/a.png"]}]
    write_concept_table(rows, tmp_path / "t.parquet")
    client.put_object(Bucket=s3_bucket, Key="in/t.parquet", Body=(tmp_path / "t.parquet").read_bytes())
    table = f"s3://{s3_bucket}/in/t.parquet"
    cfg = _config(table, f"s3://{s3_bucket}/datasets", s3_server.storage)

    with pytest.raises(ConceptTableError) as info:
        run_dataset(cfg, model=_no_model)
    problems = info.value.problems
    # every refused reference, the relative one as it resolves against the table's folder
    _same_message(problems, [*refused, f"s3://{s3_bucket}/other/a.png"])
    assert "concept 'evil', reference_uris" in problems[0] and f"'s3://{s3_bucket}/in/'" in problems[0]
    assert "secret notes" not in str(info.value)
    store = RunContext.create(cfg).storage
    assert not store.list(), store.list()  # refused before anything was written or any model loaded

    # the concept whose references lie in the table's folder is accepted (absolute and relative)
    ctx = RunContext.create(cfg, model=_no_model)
    assert [c.concept_id for c in steps.load_concepts(ctx, ["ok"])] == ["ok"]
    assert len(steps.read_references(ctx, steps.load_concepts(ctx, ["ok"])[0])) == 2

    # `normguide validate` applies the same policy
    res = CliRunner().invoke(app, ["validate", table, "--endpoint-url", s3_server.endpoint_url, "--no-references"],
                             env={**s3_server.aws_env, "COLUMNS": "300"})
    assert res.exit_code == 2 and "not under an allowed input root" in res.output and str(private) in res.output, res.output


def test_allowed_roots_widen_the_default_and_local_roots_must_be_listed(tmp_path, s3_server, s3_bucket, worker_files):
    worker, private = worker_files
    outside = make_reference(tmp_path / "elsewhere" / "x.png", seed=4)
    os.symlink(outside, worker / "link.png")  # a link under the allowed folder to a file outside it
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="other/a.png", Body=private.read_bytes())
    rows = [{"concept_id": "c", "name": "c", "reference_uris": [f"s3://{s3_bucket}/other/a.png", str(private)]},
            {"concept_id": "d", "name": "d", "reference_uris": [str(worker / "link.png")]}]
    write_concept_table(rows, tmp_path / "t.parquet")
    client.put_object(Bucket=s3_bucket, Key="in/t.parquet", Body=(tmp_path / "t.parquet").read_bytes())
    table = f"s3://{s3_bucket}/in/t.parquet"

    # only the bucket's other folder allowed: the worker path is still refused
    cfg = _config(table, f"s3://{s3_bucket}/datasets", s3_server.storage,
                  allowed_input_roots=[f"s3://{s3_bucket}/other"])
    with pytest.raises(ConceptTableError) as info:
        steps.load_concepts(RunContext.create(cfg, model=_no_model))
    assert [p.split(":")[0] for p in info.value.problems] == ["concept 'c', reference_uris", "concept 'd', reference_uris"]
    assert "storage.allowed_input_roots" in info.value.problems[0]

    # the worker folder listed as well: its file is read, the link out of it is still refused
    cfg = _config(table, f"s3://{s3_bucket}/datasets", s3_server.storage,
                  allowed_input_roots=[f"s3://{s3_bucket}/other", str(worker)])
    ctx = RunContext.create(cfg, model=_no_model)
    c = steps.load_concepts(ctx, ["c"])[0]
    assert len(steps.read_references(ctx, c)) == 2
    with pytest.raises(ConceptTableError) as info:
        steps.load_concepts(ctx, ["d"])
    assert str(worker / "link.png") in str(info.value)


def test_a_local_table_is_limited_only_when_roots_are_set(tmp_path):
    refs = tmp_path / "refs"
    good = make_reference(refs / "good.png", seed=1)
    outside = make_reference(tmp_path / "private" / "p.png", seed=2)
    rows = [{"concept_id": "a", "name": "a", "reference_uris": [str(good)]},
            {"concept_id": "b", "name": "b", "reference_uris": [str(outside), str(tmp_path / "private" / "none.png"),
                                                                 "../private/p.png"]}]
    write_concept_table(rows, refs / "t.parquet")
    plain = _config(str(refs / "t.parquet"), str(tmp_path / "out"), {})
    assert len(steps.load_concepts(RunContext.create(plain, model=_no_model))) == 2  # the default: anything

    limited = (tmp_path / "cfg.yaml")
    limited.write_text(f"concepts: {refs / 't.parquet'}\noutput: {tmp_path / 'out'}\nmodel: demo:sd1\n"
                       f"storage:\n  allowed_input_roots: ['{refs}']\n")
    res = CliRunner().invoke(app, ["run", "--no-prefect", "--config", str(limited)], env={"COLUMNS": "300"})
    assert res.exit_code == 2, res.output
    named = [str(outside), str(tmp_path / "private" / "none.png")]
    assert all(f"concept 'b', reference_uris: {u!r} is not under an allowed input root" in res.output for u in named), res.output
    assert "concept 'a'" not in res.output
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]  # nothing written, no model loaded


def test_allowed_input_roots_are_checked():
    for bad, why in (([], "at least one root"), (["/"], "filesystem root"), (["s3://"], "names no bucket"),
                     (["http://x/y"], "not supported")):
        with pytest.raises(ValueError, match=why):
            RunConfig.model_validate({"storage": {"allowed_input_roots": bad}})
    roots = RunConfig.model_validate({"storage": {"allowed_input_roots": ["s3://b/refs", "/data"]}}).storage
    assert roots.allowed_input_roots == ["s3://b/refs", "/data"]


def test_the_deployment_environment_bounds_what_a_config_allows(tmp_path, s3_server, s3_bucket, worker_files,
                                                                monkeypatch):
    """NORMGUIDE_ALLOWED_INPUT_ROOTS / _OUTPUT_ROOTS, set where the flow runs, bound every run
    there: a flow run's own config cannot widen them (its submitter writes it)."""
    worker, private = worker_files
    client = s3_server.client()
    client.put_object(Bucket=s3_bucket, Key="in/ok.png", Body=private.read_bytes())
    rows = [{"concept_id": "c", "name": "c", "reference_uris": [f"s3://{s3_bucket}/in/ok.png"]},
            {"concept_id": "w", "name": "w", "reference_uris": [str(private)]}]
    write_concept_table(rows, tmp_path / "t.parquet")
    client.put_object(Bucket=s3_bucket, Key="in/t.parquet", Body=(tmp_path / "t.parquet").read_bytes())
    table = f"s3://{s3_bucket}/in/t.parquet"
    cfg = _config(table, f"s3://{s3_bucket}/datasets", s3_server.storage, allowed_input_roots=[f"s3://{s3_bucket}/in", str(worker)])
    assert len(steps.load_concepts(RunContext.create(cfg, model=_no_model))) == 2  # no bound: the config decides

    monkeypatch.setenv("NORMGUIDE_ALLOWED_INPUT_ROOTS", f"s3://{s3_bucket}/in")
    with pytest.raises(ConceptTableError) as info:  # the worker folder the config allows is still refused
        steps.load_concepts(RunContext.create(cfg, model=_no_model))
    assert [p.split(":")[0] for p in info.value.problems] == ["concept 'w', reference_uris"]
    assert "this deployment's NORMGUIDE_ALLOWED_INPUT_ROOTS" in info.value.problems[0]
    local_table = _config(str(tmp_path / "t.parquet"), f"s3://{s3_bucket}/datasets", s3_server.storage)
    with pytest.raises(ValueError, match=r"concepts: .* is not under an allowed input root .*NORMGUIDE_ALLOWED_INPUT_ROOTS"):
        run_dataset(local_table, model=_no_model)  # the table itself, unread

    monkeypatch.setenv("NORMGUIDE_ALLOWED_OUTPUT_ROOTS", f"s3://{s3_bucket}/allowed, {tmp_path}/allowed")
    ok = _config(table, f"s3://{s3_bucket}/datasets", s3_server.storage)
    with pytest.raises(ValueError, match=rf"output: 's3://{s3_bucket}/datasets/r' is not under an allowed output root"):
        run_dataset(ok.with_overrides(**{"storage.allowed_input_roots": [f"s3://{s3_bucket}/in"]}), model=_no_model)
    assert not client.list_objects_v2(Bucket=s3_bucket, Prefix="datasets").get("Contents")
    from normguide.pipeline import output_root

    assert output_root(ok.with_overrides(output=f"s3://{s3_bucket}/allowed/x")) == f"s3://{s3_bucket}/allowed/x/r"
    assert output_root(ok.with_overrides(output=str(tmp_path / "allowed"))) == f"{tmp_path}/allowed/r"
