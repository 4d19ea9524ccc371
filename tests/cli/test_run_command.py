"""The command behaves like a tool (issue 11) and a run follows its table (issue 12): version,
defaults in --help, dry-run plans, exit codes and one-line errors, run ids from the table's
content, reopening a complete run when concepts are added, run.json statuses, lossless seeds."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import torch
from typer.testing import CliRunner

from normguide import __version__
from normguide.cli import app
from normguide.config import RunConfig
from normguide.data.plan import MAX_RANDOM_SEED, plan_seeds, random_seed_for, spread_pairs
from normguide.data.schema import write_concept_table
from normguide.diffusion import load_pipeline
from normguide.pipeline import RunContext, read_table, resolved_run_id, run_dataset, steps
from tests.helpers import make_reference
from tests.factories import never_load, tiny_config

runner = CliRunner()


@pytest.fixture(scope="module")
def model():
    return load_pipeline("demo:sd1")


def _table(folder, concepts=(("alpha", 2), ("beta", 2)), relative=True):
    rows = []
    for cid, n in concepts:
        refs = []
        for i in range(n):
            make_reference(folder / "refs" / cid / f"{i}.png", seed=11 * i + len(cid))
            refs.append(f"refs/{cid}/{i}.png" if relative else str(folder / "refs" / cid / f"{i}.png"))
        rows.append({"concept_id": cid, "name": cid, "reference_uris": refs})
    write_concept_table(rows, folder / "concepts.parquet")
    return folder / "concepts.parquet"


def _config(table, output, **overrides) -> RunConfig:
    return tiny_config(table, output, **overrides)



def test_version_and_defaults_in_help():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"normguide {__version__}"
    res = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "240"})
    assert res.exit_code == 0
    for shown in ("[default: (./outputs)]", "[default: (demo)]", "[default: (nao)]", "[default: (50)]",
                  "--concept-ids", "--prompt-template", "--seed", "--export", "[default: (a photo of a {name})]"):
        assert shown in res.output, shown


def test_plan_is_a_dry_run_with_expected_z_scores(tmp_path):
    table = _table(tmp_path / "in", concepts=(("alpha", 4),))
    res = runner.invoke(app, ["plan", "--concepts", str(table), "--methods", "nao,lerp,random", "--num-images", "4"],
                        env={"COLUMNS": "240"})
    assert res.exit_code == 0, res.output
    assert "alpha (alpha, 4 reference(s))" in res.output and "nothing is written" in res.output
    lines = {ln.split("│")[1].strip() + "/" + ln.split("│")[2].strip(): ln for ln in res.output.splitlines()
             if ln.startswith("│")}
    # NAO keeps seeds on the prior's shell; LERP's midpoints fall far inside it
    nao_z = lines["nao/interpolant"].split("│")[6].strip()
    lerp_z = lines["lerp/interpolant"].split("│")[6].strip()
    assert abs(float(nao_z.split("..")[0])) < 1 and float(lerp_z.split("..")[1]) < -3
    assert "0-1 0-2 2-3" in lines["nao/interpolant"]  # three pairs cover all four references
    assert not (tmp_path / "outputs").exists()


def test_errors_are_one_line_with_exit_code_2(tmp_path):
    res = runner.invoke(app, ["run", "--concepts", str(tmp_path / "nope.parquet"), "--output", str(tmp_path / "o")])
    assert res.exit_code == 2 and "nope.parquet' does not exist" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1
    res = runner.invoke(app, ["validate", str(tmp_path / "nope.parquet")])
    assert res.exit_code == 2 and "does not exist" in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


def test_validate_reads_the_references(tmp_path):
    table = _table(tmp_path / "in")
    assert runner.invoke(app, ["validate", str(table)]).exit_code == 0
    (tmp_path / "in" / "refs" / "beta" / "1.png").write_bytes(b"not a png")
    (tmp_path / "in" / "refs" / "alpha" / "0.png").unlink()
    res = runner.invoke(app, ["validate", str(table)])
    assert res.exit_code == 2, res.output
    assert "concept 'alpha': reference image" in res.output and "alpha/0.png" in res.output
    assert "concept 'beta': reference image" in res.output and "beta/1.png" in res.output
    assert runner.invoke(app, ["validate", "--no-references", str(table)]).exit_code == 0


def test_run_id_follows_the_table_content_not_its_path(tmp_path):
    a = _table(tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    ca, cb = _config(a, tmp_path / "o"), _config(tmp_path / "b" / "concepts.parquet", tmp_path / "o")
    assert resolved_run_id(ca) == resolved_run_id(cb)
    _table(tmp_path / "b", concepts=(("alpha", 2), ("beta", 2), ("gamma", 1)))
    changed = _config(tmp_path / "b" / "concepts.parquet", tmp_path / "o")
    assert resolved_run_id(changed) != resolved_run_id(ca)
    assert resolved_run_id(ca.with_overrides(**{"plan.num_images": 3})) != resolved_run_id(ca)


def test_manifest_paths_are_relative_so_a_moved_dataset_stays_valid(tmp_path, model):
    table = _table(tmp_path / "in")
    summary = run_dataset(_config(table, tmp_path / "o", export=("webdataset",)), model=model)
    # the run ends with its card, report and the configured export, named in the summary
    root = tmp_path / "o" / summary.run_id
    assert summary.card_uri == str(root / "README.md") and (root / "README.md").is_file()
    assert (root / "report" / "alpha" / "contact_sheet.png").is_file() and (root / "report" / "index.md").is_file()
    assert summary.exports == {"webdataset": str(root / "webdataset")} and list(root.glob("webdataset/*.tar"))
    shutil.move(summary.output_root, tmp_path / "moved")
    df = pd.read_parquet(tmp_path / "moved" / "manifest.parquet")
    assert "image_uri" not in df.columns
    assert all((tmp_path / "moved" / f).is_file() for f in df.file_name)
    assert all(f == f"images/{c}/{i}.png" for f, c, i in zip(df.file_name, df.concept_id, df.image_id))


def test_a_fixed_run_id_reopens_when_concepts_are_added(tmp_path, model):
    table = _table(tmp_path / "in")
    cfg = _config(table, tmp_path / "o", run_id="nightly")
    first = run_dataset(cfg, model=model)
    root = tmp_path / "o" / "nightly"
    assert first.status == "complete" and len(pd.read_parquet(root / "manifest.parquet")) == 4
    images = {p: p.read_bytes() for p in (root / "images").rglob("*.png")}
    assert run_dataset(cfg, model=never_load).already_complete

    _table(tmp_path / "in", concepts=(("alpha", 2), ("beta", 2), ("gamma", 2)))  # a concept is added
    cfg = _config(table, tmp_path / "o", run_id="nightly")
    again = run_dataset(cfg, model=model)
    assert not again.already_complete and again.finalized
    assert {c: o.status for c, o in again.concepts.items()} == {"alpha": "skipped", "beta": "skipped",
                                                                 "gamma": "completed"}
    df = pd.read_parquet(root / "manifest.parquet")
    assert sorted(df.concept_id.unique()) == ["alpha", "beta", "gamma"] and len(df) == 6
    assert all(p.read_bytes() == b for p, b in images.items())  # nothing complete was rewritten
    record = json.loads((root / "run.json").read_text())
    assert record["status"] == "complete" and record["concepts"] == ["alpha", "beta", "gamma"]
    assert record["table_digest"] == read_table(cfg).digest
    assert run_dataset(cfg, model=never_load).already_complete


def test_a_rejected_table_writes_nothing_and_a_fixed_run_id_then_runs(tmp_path, model):
    folder = tmp_path / "in"
    folder.mkdir()
    write_concept_table([{"concept_id": "../bad", "name": "x", "reference_uris": ["r.png"]}], folder / "concepts.parquet")
    cfg = _config(folder / "concepts.parquet", tmp_path / "o", run_id="fixed")
    with pytest.raises(ValueError, match="concept_id"):
        run_dataset(cfg, model=model)
    assert not (tmp_path / "o" / "fixed" / "run.json").exists()
    _table(folder)  # corrected in place: the same run id is not refused
    assert run_dataset(cfg, model=model).status == "complete"


def test_a_broken_reference_is_refused_before_the_model_loads_when_strict(tmp_path):
    # strict_references: the interactive refuse-everything mode (the default skips only the bad
    # concept: tests/pipeline/test_partial_references.py)
    table = _table(tmp_path / "in")
    (tmp_path / "in" / "refs" / "beta" / "0.png").write_bytes(b"")
    with pytest.raises(ValueError, match=r"concept 'beta': reference image .*beta/0\.png.* is empty"):
        run_dataset(_config(table, tmp_path / "o", strict_references=True), model=never_load)
    assert not list((tmp_path / "o").rglob("run.json"))


def test_interrupt_marks_run_json_and_a_rerun_resumes(tmp_path, model):
    table = _table(tmp_path / "in")
    cfg = _config(table, tmp_path / "o")

    def stop(n, total, outcome):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_dataset(cfg, model=model, progress=stop)
    root = tmp_path / "o" / resolved_run_id(cfg)
    record = json.loads((root / "run.json").read_text())
    assert record["status"] == "interrupted" and "1 of 2" in record["error"]
    resumed = run_dataset(cfg, model=model)
    assert resumed.concepts["alpha"].status == "skipped" and resumed.status == "complete"
    assert json.loads((root / "run.json").read_text())["status"] == "complete"


def test_random_seeds_survive_pandas_floats():
    seeds = [random_seed_for(0, "alpha", i) for i in range(2000)]
    assert max(seeds) <= MAX_RANDOM_SEED < 2**53 and max(seeds) > 2**50
    assert all(int(float(s)) == s for s in seeds)  # exact through float64, as pandas stores nullable ints
    plan = plan_seeds(torch.randn(2, 4, 8, 8), concept_id="alpha", methods=("random",), num_images=3)
    again = torch.randn((4, 8, 8), generator=torch.Generator().manual_seed(int(float(plan.rows[1].seed))))
    assert torch.equal(plan.seeds[1].reshape(4, 8, 8), again)


def test_a_small_budget_spreads_over_all_references():
    pairs = spread_pairs(6)[:3]
    assert sorted(i for p in pairs for i in p) == list(range(6))  # three paths use all six references
    plan = plan_seeds(torch.randn(4, 4, 8, 8), concept_id="c", methods=("nao",), num_images=3)
    used = {s for r in plan.rows if r.kind == "interpolant" for s in r.sources}
    assert used == {0, 1, 2, 3}


def test_status_is_failed_with_the_error(tmp_path, model):
    table = _table(tmp_path / "in")
    cfg = _config(table, tmp_path / "o")
    ctx = RunContext.create(cfg.pinned(read_table(cfg).digest), model=model)
    steps.start(ctx)
    steps.record_status(ctx, "failed", error="beta: boom")
    record = json.loads(ctx.storage.read_bytes("run.json"))
    assert (record["status"], record["error"]) == ("failed", "beta: boom")
    steps.start(ctx)  # a resume is running again, the old error cleared
    record = json.loads(ctx.storage.read_bytes("run.json"))
    assert (record["status"], record["error"]) == ("running", None)


def test_a_second_run_of_the_same_output_is_refused_while_the_first_holds_the_lease(tmp_path, model):
    from normguide.data.storage import LeaseHeld

    table = _table(tmp_path / "in")
    cfg = _config(table, tmp_path / "o")
    ctx = RunContext.create(cfg, model=model)
    held = ctx.storage.acquire_lease(owner="run elsewhere")
    try:
        with pytest.raises(LeaseHeld, match="run elsewhere"):
            run_dataset(cfg, model=never_load)
        res = runner.invoke(app, ["run", "--no-prefect", "--concepts", str(table), "--output", str(tmp_path / "o"),
                                  "--model", "demo:sd1", "--methods", "nao", "--num-images", "2", "--steps", "2",
                                  "--inversion-steps", "2", "--no-reconstruction"])
        assert res.exit_code == 2 and "run elsewhere" in res.output, res.output
        # a shard of the same run overlaps the whole run's claim: refused too (issue 25)
        with pytest.raises(LeaseHeld, match="run elsewhere"):
            run_dataset(cfg, concept_ids=["alpha"], finalize=False, model=never_load)
    finally:
        held.release()
    assert run_dataset(cfg, model=model).status == "complete"
    assert not list((tmp_path / "o").rglob("_LEASE*"))  # released at the end


def test_run_refine_options_reach_the_run_and_its_manifest(tmp_path):
    """`run --refine --refine-...`: the options land in the run's settings (run.json) and every
    image's manifest row records its refinement (issue 19: the CLI path, not only the config)."""
    table = _table(tmp_path, concepts=(("alpha", 2),))
    out = tmp_path / "o"
    res = runner.invoke(app, ["run", "--no-prefect", "--concepts", str(table), "--output", str(out), "--model", "demo",
                              "--methods", "nao", "--num-images", "2", "--steps", "2", "--inversion-steps", "2",
                              "--no-reconstruction", "--refine", "--refine-iterations", "1", "--refine-steps", "3",
                              "--refine-lr", "0.07"])
    assert res.exit_code == 0, res.output
    (root,) = [p.parent for p in out.glob("*/run.json")]
    refine = json.loads((root / "run.json").read_text())["config"]["refine"]
    assert (refine["enabled"], refine["iterations"], refine["num_inference_steps"], refine["learning_rate"]) == (
        True, 1, 3, 0.07)
    df = pd.read_parquet(root / "manifest.parquet")
    assert len(df) == 2 and df.refine_start.eq("nao").all() and df.refine_iterations.between(0, 1).all()
    assert df.refine_semantic_start.notna().all() and not df.refine_fallback.any()
