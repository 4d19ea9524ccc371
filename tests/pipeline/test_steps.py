"""The pipeline's steps called directly: an injected store and model, no Prefect, no server."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from normguide.config import RunConfig
from normguide.data.seeds import SeedsFile, seeds_key
from normguide.data.storage import Storage
from normguide.diffusion import load_pipeline
from normguide.pipeline import RunContext, resolved_run_id, run_dataset, steps
from tests.factories import never_load, reference_table, tiny_config
from tests.helpers import make_reference


@pytest.fixture(scope="module")
def model():
    return load_pipeline("demo:sd1")


@pytest.fixture
def table(tmp_path):
    return reference_table(tmp_path / "in" / "concepts.parquet", (("alpha", 2), ("beta", 3)),
                           seed=lambda cid, i: 7 * i + len(cid))


def _config(table, output, **overrides) -> RunConfig:
    return tiny_config(table, output, methods=("nao", "slerp"), num_images=3, reconstruction=True, guidance_scale=2.0,
                       **overrides)



def test_each_step_on_an_injected_store(tmp_path, table, model):
    store = Storage.open(str(tmp_path / "elsewhere"))
    ctx = RunContext.create(_config(table, tmp_path / "unused"), storage=store, model=model)
    prepared = steps.prepare(ctx)
    assert not prepared.complete and prepared.output_root == store.root and not store.exists("run.json")
    started = steps.start(ctx)  # loads the model, writes run.json
    assert not started.complete and store.exists("run.json")
    (alpha, beta) = steps.load_concepts(ctx)

    seeds = steps.invert(ctx, alpha)
    assert seeds.inverted.shape == (2, *model.seed_shape) and not seeds.has_plan
    on_disk = store.read_bytes(seeds_key("alpha"))
    assert SeedsFile.from_bytes(on_disk).to_bytes() == on_disk  # one type reads and writes it, losslessly

    planned = steps.plan(ctx, alpha, seeds)
    assert [r.method for r in planned.plan_rows] == ["nao"] * 3 + ["slerp"] * 3
    assert steps.plan(ctx, alpha, planned) is planned  # a planned file is reused as it is

    gen = steps.generate(ctx, alpha, planned)
    assert (gen.images, gen.generated, gen.skipped) == (6, 6, False)
    part = pd.read_parquet(io.BytesIO(store.read_bytes("manifest/part-alpha.parquet")))
    assert list(part.image_id) == [r.image_id for r in planned.plan_rows]
    assert all(store.exists(f"images/alpha/{i}.png") for i in part.image_id)
    assert gen.generation.images == 6 and gen.generation.seconds > 0 and gen.generation.flops_per_image > 0
    # complete: nothing generated, nothing timed
    assert steps.completed_concept(ctx, alpha) == gen.model_copy(update={"generated": 0, "skipped": True,
                                                                         "generation": None})
    assert steps.missing_parts(ctx, ["alpha", "beta"]) == ["beta"] == steps.parts_to_redo(ctx, [alpha, beta])
    with pytest.raises(RuntimeError, match=r"manifest parts missing for concepts \['beta'\]"):
        steps.finalize(ctx, ["alpha", "beta"])
    assert not store.exists("manifest.parquet") and not (tmp_path / "unused").exists()


def test_generate_reuses_written_images_and_finalize_needs_no_model(tmp_path, table, model):
    # A lost image regenerated alone has its original bytes only in batch-invariant mode; batched
    # (the default) it is made in a batch of one, which may change the last bit (docs/determinism.md).
    ctx = RunContext.create(_config(table, tmp_path / "out", **{"generation.batch_invariant": True}), model=model)
    steps.start(ctx)
    (alpha, _) = steps.load_concepts(ctx)
    seeds = steps.plan(ctx, alpha, steps.invert(ctx, alpha))
    first = steps.generate(ctx, alpha, seeds)
    images = {k: ctx.storage.read_bytes(k) for k in ctx.storage.list("images")}
    (tmp_path / "out" / ctx.run_id / "manifest" / "part-alpha.parquet").unlink()
    (tmp_path / "out" / ctx.run_id / "images" / "alpha" / "nao-interpolant-00000.png").unlink()
    again = steps.generate(ctx, alpha, seeds)
    assert (again.images, again.generated) == (first.images, 1)
    assert again.generation.images == 1  # a resume times only what it generates itself
    assert {k: ctx.storage.read_bytes(k) for k in ctx.storage.list("images")} == images
    late = RunContext.create(ctx.config, model=never_load)
    assert steps.finalize(late, ["alpha"]).endswith("manifest.parquet") and steps.is_complete(late)


def test_damaged_seeds_file_is_named_and_inverted_again(tmp_path, table, model, caplog):
    ctx = RunContext.create(_config(table, tmp_path / "out"), model=model)
    ctx.storage.write_bytes(seeds_key("alpha"), b"not safetensors")
    with caplog.at_level("WARNING", logger="normguide.pipeline.steps"):
        assert steps.read_seeds(ctx, "alpha") is None  # not a failure on every rerun (issue 12)
    assert "seeds/alpha.safetensors is not a readable normguide seeds file" in caplog.text
    (alpha, _) = steps.load_concepts(ctx)
    seeds = steps.invert(ctx, alpha)
    assert SeedsFile.from_bytes(ctx.storage.read_bytes(seeds_key("alpha"))).to_bytes() == seeds.to_bytes()


def test_local_driver_isolates_failures_and_reruns_without_the_model(tmp_path, table, model):
    cfg = _config(table, tmp_path / "out")
    root = tmp_path / "out" / resolved_run_id(cfg)
    seen = []

    def progress(n, total, outcome):
        seen.append((n, total, outcome.status))
        if n == 1:  # beta's reference breaks after the up-front checks passed: only beta fails
            (tmp_path / "in" / "beta" / "1.png").write_bytes(b"broken")

    summary = run_dataset(cfg, model=model, progress=progress)
    assert seen == [(1, 2, "completed"), (2, 2, "failed")]
    assert summary.failed == ["beta"] and "beta/1.png" in summary.concepts["beta"].error
    assert not summary.finalized and summary.manifest_uri is None
    record = json.loads((root / "run.json").read_text())
    assert record["status"] == "failed" and "beta/1.png" in record["error"]
    make_reference(tmp_path / "in" / "beta" / "1.png", seed=99)
    fixed = run_dataset(cfg, model=model)
    assert fixed.concepts["alpha"].status == "skipped" and fixed.concepts["beta"].status == "completed"
    assert fixed.finalized and fixed.status == "complete"
    record = json.loads((root / "run.json").read_text())
    assert record["status"] == "complete" and record["error"] is None
    # a complete run is a no-op that never loads the model
    done = run_dataset(cfg, model=never_load)
    assert done.already_complete and done.is_demo and done.model.startswith("demo:sd1")


def test_seed_methods_registry_drives_config_and_plan():
    from normguide.data.plan import METHODS, SEED_METHODS

    assert set(METHODS) >= {"nao", "nao-fitted", "paper", "slerp", "lerp", "cog", "random"}
    assert all(m.name == name for name, m in SEED_METHODS.items())
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['bogus'\]"):
        RunConfig().with_overrides(**{"plan.methods": ("nao", "bogus")})


def test_cli_runs_the_local_driver_without_prefect(tmp_path, table, monkeypatch):
    import yaml
    from typer.testing import CliRunner

    from normguide.cli import app

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens: Prefect must not be used
    cfg = _config(table, tmp_path / "out")
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    res = CliRunner().invoke(app, ["run", "--no-prefect", "--config", str(path)])
    assert res.exit_code == 0, res.output
    assert "[2/2] beta: completed" in res.output and "manifest: " in res.output
    root = tmp_path / "out" / resolved_run_id(cfg)
    assert (root / "_SUCCESS").exists() and len(pd.read_parquet(root / "manifest.parquet")) == 12
