"""A concept whose row in the table changed is made again under a fixed run id (issue 12, lost
updates): its seeds file and manifest part record the row they were made for; a rerun that
finds another row discards them, with its images, and regenerates the concept, leaving the
others as they are. A table moved with its relative references changes no row."""

from __future__ import annotations

import io
import json
import logging
import shutil

import pandas as pd
import pyarrow.parquet as pq
import pytest

from normguide.config import RunConfig
from normguide.data import manifest as mf
from normguide.data.schema import write_concept_table
from normguide.data.seeds import SeedsFile, seeds_key
from normguide.diffusion import load_pipeline
from normguide.pipeline import RunContext, read_table, run_dataset, steps
from tests.helpers import make_reference
from tests.factories import never_load, tiny_config


@pytest.fixture(scope="module")
def model():
    return load_pipeline("demo:sd1")


def _rows(folder, beta_prompt=None, beta_images=None, beta_refs=2):
    rows = []
    for cid, n in (("alpha", 2), ("beta", beta_refs)):
        refs = []
        for i in range(n):
            make_reference(folder / "refs" / cid / f"{i}.png", seed=11 * i + len(cid))
            refs.append(f"refs/{cid}/{i}.png")
        rows.append({"concept_id": cid, "name": cid, "reference_uris": refs,
                     "prompt": beta_prompt if cid == "beta" else None,
                     "num_images": beta_images if cid == "beta" else None})
    write_concept_table(rows, folder / "concepts.parquet")
    return folder / "concepts.parquet"


def _config(table, output, **overrides) -> RunConfig:
    return tiny_config(table, output, num_images=3, **{"run_id": "nightly", "evaluation.enabled": False, **overrides})



def _files(root, *parts) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for part in parts for p in sorted((root / part).rglob("*"))
            if p.is_file()}


def _data(root) -> dict[str, bytes]:
    return _files(root, "images", "seeds", "manifest") | {"manifest.parquet": (root / "manifest.parquet").read_bytes()}


def test_a_changed_row_under_a_fixed_run_id_is_made_again(tmp_path, model, caplog):
    table = _rows(tmp_path / "in")
    root = tmp_path / "o" / "nightly"
    assert run_dataset(_config(table, tmp_path / "o"), model=model).status == "complete"
    alpha_before = _files(root, "images/alpha", "seeds/alpha.safetensors", "manifest/part-alpha.parquet")
    beta_before = _files(root, "images/beta")
    assert len(beta_before) == 3

    # beta's row changes: another prompt, one image less
    _rows(tmp_path / "in", beta_prompt="a photo of a beta", beta_images=2)
    cfg = _config(table, tmp_path / "o")
    with caplog.at_level(logging.WARNING, logger="normguide"):
        again = run_dataset(cfg, model=model)
    assert not again.already_complete and again.status == "complete"
    assert {c: o.status for c, o in again.concepts.items()} == {"alpha": "skipped", "beta": "completed"}
    said = [r.getMessage() for r in caplog.records if "changed in the concept table" in r.getMessage()]
    assert len(said) == 1 and "'beta'" in said[0] and "num_images, prompt" in said[0] and "part-beta.parquet" in said[0]

    # alpha untouched; beta regenerated, with no stale image left behind
    assert _files(root, "images/alpha", "seeds/alpha.safetensors", "manifest/part-alpha.parquet") == alpha_before
    df = pd.read_parquet(root / "manifest.parquet")
    on_disk = sorted(f"images/beta/{p.name}" for p in (root / "images" / "beta").iterdir())
    assert len(on_disk) == 2 and on_disk == sorted(df[df.concept_id == "beta"].file_name)
    assert df[df.concept_id == "beta"].prompt.unique().tolist() == ["a photo of a beta"] and len(df) == 5
    seeds = SeedsFile.from_bytes((root / seeds_key("beta")).read_bytes())
    assert seeds.meta["concept"]["prompt"] == "a photo of a beta" and seeds.meta["prompt"] == "a photo of a beta"
    assert json.loads((root / "run.json").read_text())["table_digest"] == read_table(cfg).digest
    assert (root / "_SUCCESS").exists()

    # byte for byte what a clean run of the changed table writes
    clean = run_dataset(_config(table, tmp_path / "clean"), model=model)
    assert clean.status == "complete"
    assert _data(root) == _data(tmp_path / "clean" / "nightly")
    assert run_dataset(cfg, model=never_load).already_complete


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_a_discard_interrupted_half_way_is_finished_by_the_rerun(tmp_path, model):
    """The discard deletes the part, the images, then the seeds: stopped after the part, the
    old seeds still name the old row, and the rerun discards and regenerates from there."""
    table = _rows(tmp_path / "in")
    root = tmp_path / "o" / "nightly"
    assert run_dataset(_config(table, tmp_path / "o"), model=model).status == "complete"
    _rows(tmp_path / "in", beta_refs=3)  # beta gains a reference
    (root / "manifest" / "part-beta.parquet").unlink()  # as if the discard stopped here
    (root / "_SUCCESS").unlink()
    again = run_dataset(_config(table, tmp_path / "o"), model=model)
    assert again.status == "complete" and again.concepts["beta"].status == "completed"
    assert SeedsFile.from_bytes((root / seeds_key("beta")).read_bytes()).num_seeds == 3
    assert run_dataset(_config(table, tmp_path / "clean"), model=model).status == "complete"
    assert _data(root) == _data(tmp_path / "clean" / "nightly")


def test_a_table_moved_with_its_references_changes_no_row(tmp_path, model):
    table = _rows(tmp_path / "in")
    assert run_dataset(_config(table, tmp_path / "o"), model=model).status == "complete"
    root = tmp_path / "o" / "nightly"
    before = _data(root)
    shutil.copytree(tmp_path / "in", tmp_path / "moved")
    moved = tmp_path / "moved" / "concepts.parquet"
    assert run_dataset(_config(moved, tmp_path / "o"), model=never_load).already_complete

    # a concept is added to the moved table: the others are skipped, not regenerated
    rows = pq.read_table(moved).to_pylist()
    make_reference(tmp_path / "moved" / "refs" / "gamma" / "0.png", seed=5)
    rows.append({"concept_id": "gamma", "name": "gamma", "reference_uris": ["refs/gamma/0.png"], "prompt": None,
                 "num_images": None})
    write_concept_table(rows, moved)
    again = run_dataset(_config(moved, tmp_path / "o"), model=model)
    assert {c: o.status for c, o in again.concepts.items()} == {"alpha": "skipped", "beta": "skipped",
                                                                 "gamma": "completed"}
    after = _data(root)
    assert all(after[k] == v for k, v in before.items() if k != "manifest.parquet")


def test_parts_to_redo_names_missing_and_changed_rows_and_writes_nothing(tmp_path, model):
    table = _rows(tmp_path / "in")
    assert run_dataset(_config(table, tmp_path / "o"), model=model).status == "complete"
    root = tmp_path / "o" / "nightly"
    before = _files(root, ".")
    _rows(tmp_path / "in", beta_prompt="another")
    ctx = RunContext.create(_config(table, tmp_path / "o"))
    alpha, beta = steps.load_concepts(ctx)
    assert steps.parts_to_redo(ctx, [alpha, beta]) == ["beta"]
    assert _files(root, ".") == before  # a read-only question
    part = mf.parquet_to_table((root / "manifest" / "part-alpha.parquet").read_bytes())
    assert mf.part_concept(part) == alpha.definition()
    # the consolidated manifest carries no per-part metadata
    assert mf.part_concept(mf.parquet_to_table((root / "manifest.parquet").read_bytes())) is None


def test_outputs_from_before_rows_were_recorded_are_reused(tmp_path, model):
    """Seeds files and parts without a recorded row (written by an earlier normguide) are taken
    as they are: an upgrade does not regenerate every dataset."""
    table = _rows(tmp_path / "in")
    root = tmp_path / "o" / "nightly"
    assert run_dataset(_config(table, tmp_path / "o"), model=model).status == "complete"
    for cid in ("alpha", "beta"):
        part = root / "manifest" / f"part-{cid}.parquet"
        part.write_bytes(mf.rows_to_parquet(mf.parquet_to_table(part.read_bytes()).to_pylist()))
        seeds = SeedsFile.from_bytes((root / seeds_key(cid)).read_bytes())
        seeds.meta.pop("concept")
        (root / seeds_key(cid)).write_bytes(seeds.to_bytes())
    (root / "_SUCCESS").unlink()
    images = _files(root, "images")
    again = run_dataset(_config(table, tmp_path / "o"), model=model)
    assert again.status == "complete" and {o.status for o in again.concepts.values()} == {"skipped"}
    assert _files(root, "images") == images


def test_a_changed_row_on_s3_is_made_again(tmp_path, model, s3_server, s3_bucket, monkeypatch):
    for name, value in s3_server.aws_env.items():
        monkeypatch.setenv(name, value)
    storage = s3_server.env_storage
    table = _rows(tmp_path / "in")
    cfg = _config(table, f"s3://{s3_bucket}/changed", storage=storage)
    assert run_dataset(cfg, model=model).status == "complete"
    _rows(tmp_path / "in", beta_images=1)
    cfg = _config(table, f"s3://{s3_bucket}/changed", storage=storage)
    again = run_dataset(cfg, model=model)
    assert {c: o.status for c, o in again.concepts.items()} == {"alpha": "skipped", "beta": "completed"}
    store = RunContext.create(cfg).storage
    df = pd.read_parquet(io.BytesIO(store.read_bytes("manifest.parquet")))
    assert store.list("images/beta") == list(df[df.concept_id == "beta"].file_name) and len(store.list("images/beta")) == 1
    assert len(df) == 4 and store.exists("_SUCCESS")


def test_plan_says_which_concepts_a_rerun_makes_again(tmp_path, model):
    from typer.testing import CliRunner

    from normguide.cli import app

    table = _rows(tmp_path / "in")
    cfg = _config(table, tmp_path / "o")
    assert run_dataset(cfg, model=model).status == "complete"
    _rows(tmp_path / "in", beta_prompt="a beta", beta_images=1)
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    before = _files(tmp_path / "o", ".")
    res = CliRunner().invoke(app, ["plan", "--config", str(tmp_path / "cfg.json")], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "existing run: 1 concept(s) done, 0 to generate, 1 changed since (made again): beta (num_images, prompt)" \
        in res.output
    assert _files(tmp_path / "o", ".") == before


def test_the_exports_of_a_reopened_run_follow_its_new_manifest(tmp_path, model, caplog):
    """The hf and webdataset exports record the manifest they were made from: a run reopened by
    a changed or an added concept makes them again (they were silently stale, or refused)."""
    import webdataset as wds

    table = _rows(tmp_path / "in")
    root = tmp_path / "o" / "nightly"
    first = run_dataset(_config(table, tmp_path / "o", export=["hf", "webdataset"], export_shard_size=2), model=model)
    assert first.status == "complete" and first.report_error is None

    def prompts() -> tuple[set[str], set[str]]:
        hf = set(pd.read_parquet(root / "hf" / "nao").prompt)
        tars = sorted(str(p) for p in (root / "webdataset").glob("shard-*.tar"))
        samples = list(wds.WebDataset(tars, shardshuffle=False))
        return hf, {json.loads(s["json"])["prompt"] for s in samples}

    _rows(tmp_path / "in", beta_prompt="a changed beta")  # same image count: same number of shards
    with caplog.at_level(logging.WARNING, logger="normguide"):
        again = run_dataset(_config(table, tmp_path / "o", export=["hf", "webdataset"], export_shard_size=2),
                            model=model)
    assert again.status == "complete" and again.report_error is None, again.report_error
    want = {"a photo of a alpha", "a changed beta"}
    assert prompts() == (want, want)
    assert sum("export of an earlier manifest" in r.getMessage() for r in caplog.records) == 2
    assert not list(root.rglob("_STARTED"))

    # an added concept: more samples than the finished exports hold
    rows = pq.read_table(table).to_pylist()
    make_reference(tmp_path / "in" / "refs" / "gamma" / "0.png", seed=5)
    rows.append({"concept_id": "gamma", "name": "gamma", "reference_uris": ["refs/gamma/0.png"], "prompt": None,
                 "num_images": None})
    write_concept_table(rows, table)
    third = run_dataset(_config(table, tmp_path / "o", export=["hf", "webdataset"], export_shard_size=2), model=model)
    assert third.status == "complete" and third.report_error is None, third.report_error
    assert prompts() == (want | {"a photo of a gamma"},) * 2
    assert len(pd.read_parquet(root / "hf" / "nao")) == len(pd.read_parquet(root / "manifest.parquet")) == 9


def test_a_reopened_run_drops_the_evaluation_of_its_earlier_manifest(tmp_path, model):
    table = _rows(tmp_path / "in")
    root = tmp_path / "o" / "nightly"
    assert run_dataset(_config(table, tmp_path / "o"), model=model).status == "complete"
    metrics = pd.DataFrame({"concept_id": ["(all)"], "method": ["nao"], "recognisability": [0.5]})
    (root / "eval").mkdir()
    metrics.to_parquet(root / "eval" / "metrics.parquet")
    (root / "eval" / "report.md").write_text("# old evaluation\n")
    # the same table again: the manifest is the same, the evaluation stays
    (root / "_SUCCESS").unlink()
    assert run_dataset(_config(table, tmp_path / "o"), model=model).status == "complete"
    assert (root / "eval" / "metrics.parquet").exists()
    assert "This run was not evaluated" not in (root / "README.md").read_text()  # the card shows it
    # a changed row: the evaluation scored images that are gone
    _rows(tmp_path / "in", beta_images=1)
    assert run_dataset(_config(table, tmp_path / "o"), model=model).status == "complete"
    assert not (root / "eval" / "metrics.parquet").exists() and not (root / "eval" / "report.md").exists()
    assert "This run was not evaluated" in (root / "README.md").read_text()
