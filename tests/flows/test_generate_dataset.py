"""The dataset-generation flow end to end on the demo model (2 inference steps)."""

import hashlib
import json
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from normguide.data.schema import write_concept_table
from normguide.flows.generate_dataset import generate_dataset
from normguide.geometry import ChiPrior
from normguide.pipeline import output_root, resolved_run_id
from tests.helpers import make_reference

from .conftest import tiny_config


def _run(cfg):
    state = generate_dataset(config=cfg, return_state=True)
    return state, state.result(raise_on_failure=False)


def _stable(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("image_id").reset_index(drop=True)


def test_flow_writes_consistent_dataset(concept_dir, tmp_path):
    cfg = tiny_config(concept_dir / "concepts.parquet", tmp_path / "out")
    state, summary = _run(cfg)
    assert state.is_completed(), summary
    root = Path(output_root(cfg))
    assert summary.output_root == str(root)

    # layout
    for name in ("run.json", "manifest.parquet", "_SUCCESS", "seeds/alpha.safetensors", "manifest/part-beta.parquet"):
        assert (root / name).exists(), name
    run = json.loads((root / "run.json").read_text())
    assert run["status"] == "complete" and run["model"]["is_demo"] and "digits model" in run["model"]["note"]
    assert run["versions"]["torch"] == torch.__version__
    # the Prefect driver records the generation's cost as the local one does (the summary's record)
    assert run["cost"] == summary.cost.model_dump(mode="json") and run["cost"]["images"] == 6
    assert run["cost"]["flops_per_image"] > 0 and run["cost"]["generation_seconds"] > 0

    df = pd.read_parquet(root / "manifest.parquet")
    assert sorted(df.concept_id.unique()) == ["alpha", "beta"]
    assert len(df) == 6 and df.file_name.is_unique
    assert (df.synthetic).all() and df.model.str.startswith("demo (a small digits model").all()
    assert set(df.kind) == {"centroid", "interpolant"}
    prior = None
    for cid, group in df.groupby("concept_id"):
        seeds = load_file(root / f"seeds/{cid}.safetensors")
        planned = seeds["planned"].reshape(len(group), -1).double()
        prior = prior or ChiPrior(planned.shape[1])
        assert seeds["inverted"].shape[0] == {"alpha": 3, "beta": 2}[cid]
        for i, row in enumerate(group.sort_values("image_id").itertuples()):
            # every row points at an existing PNG whose hash and size match
            assert row.file_name == f"images/{cid}/{row.image_id}.png"  # relative to the run root
            blob = (root / row.file_name).read_bytes()
            assert hashlib.sha256(blob).hexdigest() == row.sha256
            with Image.open(root / row.file_name) as im:
                assert im.size == (row.width, row.height) and im.format == "PNG"
            # the seeds file holds what the manifest says
            z = planned[i]
            assert row.seed_norm == pytest.approx(float(z.norm()), rel=1e-6)
            assert row.seed_zscore == pytest.approx(float(prior.zscore(z)), rel=1e-5, abs=1e-5)
            assert row.reconstruction_error is not None and row.reconstruction_error >= 0
        centroid = group[group.kind == "centroid"]
        assert len(centroid) == 1 and len(centroid.source_refs.iloc[0]) == seeds["inverted"].shape[0]
    # NAO seeds sit on the prior's shell, unlike the Euclidean mean
    assert df.seed_zscore.abs().max() < 5

    # the run summary is published as a markdown artifact of this flow run
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    (artifact,) = [a for a in artifacts if a.key == "normguide-run-summary"]
    assert artifact.type == "markdown"
    assert summary.run_id in artifact.data and "| alpha | completed | 3 | 3 | nao |" in artifact.data


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_same_config_twice_is_identical(concept_dir, tmp_path):
    cfg_a = tiny_config(concept_dir / "concepts.parquet", tmp_path / "a")
    cfg_b = tiny_config(concept_dir / "concepts.parquet", tmp_path / "b")
    assert resolved_run_id(cfg_a) == resolved_run_id(cfg_b)
    for cfg in (cfg_a, cfg_b):
        assert _run(cfg)[0].is_completed()
    ra, rb = Path(output_root(cfg_a)), Path(output_root(cfg_b))
    da, db = pd.read_parquet(ra / "manifest.parquet"), pd.read_parquet(rb / "manifest.parquet")
    pd.testing.assert_frame_equal(_stable(da), _stable(db))
    for rel in sorted(p.relative_to(ra) for p in ra.rglob("*.png")):
        assert (ra / rel).read_bytes() == (rb / rel).read_bytes(), rel
    assert (ra / "seeds/alpha.safetensors").read_bytes() == (rb / "seeds/alpha.safetensors").read_bytes()

    # a rerun of a complete run is a no-op that says so, and touches nothing
    before = {p: p.stat().st_mtime_ns for p in ra.rglob("*") if p.is_file()}
    state, summary = _run(cfg_a)
    assert state.is_completed() and summary.already_complete
    assert before == {p: p.stat().st_mtime_ns for p in ra.rglob("*") if p.is_file()}


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_every_method_produces_its_rows(concept_dir, tmp_path):
    # demo:sd2-v: its inversions of any image land on the chi shell, as a trained model's inversions of
    # its own kind of images do, so the geometric contrast between methods is clear at 2 steps
    cfg = tiny_config(
        concept_dir / "concepts.parquet", tmp_path / "m", model="demo:sd2-v",
        **{"plan.methods": ("nao", "slerp", "lerp", "cog", "random"), "plan.num_images": 2,
           "plan.include_inversions": True, "inversion.reconstruction": False},
    )
    state, summary = _run(cfg)
    assert state.is_completed(), summary
    df = pd.read_parquet(Path(output_root(cfg)) / "manifest.parquet")
    counts = df.groupby(["concept_id", "method"]).size()
    for cid, k in (("alpha", 3), ("beta", 2)):
        for m in ("slerp", "lerp", "cog", "random"):
            assert counts[(cid, m)] == 2
        assert counts[(cid, "nao")] == 2 + k  # + one inversion image per reference
    rnd = df[df.method == "random"]
    assert (rnd.kind == "random").all() and rnd.seed.notna().all() and rnd.seed.is_unique
    assert df[df.method != "random"].seed.isna().all()
    assert df.reconstruction_error.isna().all()
    # the Euclidean mean centroid falls far inside the shell; NAO's does not
    cent = df[df.kind == "centroid"].set_index(["concept_id", "method"]).seed_zscore
    assert cent[("alpha", "lerp")] < -10 and abs(cent[("alpha", "nao")]) < 3


def test_bad_inputs_fail_the_run_before_any_work(concept_dir, tmp_path):
    refs = concept_dir / "refs"
    bad = {
        "missing": [str(refs / "nope.png")],
        "corrupt": [str(refs / "corrupt.png")],
        "truncated": [str(refs / "trunc.png")],
        "notimage": [str(refs / "notes.txt")],
        "tiny": [str(refs / "tiny.png")],
    }
    (refs / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    good = make_reference(refs / "good.png", seed=7)
    (refs / "trunc.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    (refs / "notes.txt").write_text("not an image")
    Image.new("RGB", (1, 1)).save(refs / "tiny.png")
    rows = [{"concept_id": cid, "name": cid, "reference_uris": r} for cid, r in bad.items()]
    rows.append({"concept_id": "fine", "name": "fine", "reference_uris": [str(good), str(good)]})
    write_concept_table(rows, concept_dir / "bad.parquet")

    cfg = tiny_config(concept_dir / "bad.parquet", tmp_path / "bad", strict_references=True)
    # (strict: the default skips the bad concepts alone, tests/pipeline/test_partial_references.py)
    # every bad reference is found up front, before the model loads or anything is written
    # (a concept failing later, inside its task, fails alone: tests/flows/test_batching.py)
    state, _ = _run(cfg)
    assert state.is_failed()
    with pytest.raises(Exception, match="5 concept") as ei:
        state.result()
    for cid, (uri,) in bad.items():
        assert f"concept {cid!r}" in str(ei.value) and uri in str(ei.value), str(ei.value)
    assert "does not exist" in str(ei.value) and "1x1" in str(ei.value)
    root = Path(output_root(cfg))
    assert not list(root.rglob("*.png")) and not (root / "manifest").exists()


@pytest.mark.parametrize("model, match", [("/does/not/exist", "does not exist"), ("NOTADIR", "model_index.json")])
def test_bad_model_path_fails_before_work(concept_dir, tmp_path, model, match):
    if model == "NOTADIR":
        model = str(tmp_path / "empty-model")
        Path(model).mkdir()
    cfg = tiny_config(concept_dir / "concepts.parquet", tmp_path / "o", model=model)
    state, _ = _run(cfg)
    assert state.is_failed()
    with pytest.raises(Exception, match=match) as ei:
        state.result()
    assert model in str(ei.value)
    assert not list(Path(output_root(cfg)).rglob("*.png"))


def test_run_id_reused_with_other_settings_is_refused(concept_dir, tmp_path):
    cfg = tiny_config(concept_dir / "concepts.parquet", tmp_path / "r", run_id="fixed", **{"plan.num_images": 1})
    assert _run(cfg)[0].is_completed()
    other = cfg.with_overrides(**{"generation.guidance_scale": 3.0, "plan.num_images": 2})
    state, _ = _run(other)
    assert state.is_failed()
    with pytest.raises(ValueError, match=r"different settings \(generation.guidance_scale, plan.num_images\)"):
        state.result()
    # the same settings with another batch size or device resume the run (a no-op here)
    state, summary = _run(cfg.with_overrides(**{"generation.batch_size": 1}))
    assert state.is_completed() and summary.already_complete


def test_a_changed_row_under_a_fixed_run_id_is_made_again_by_the_flow(concept_dir, tmp_path):
    """The flow's resume check discards the outputs of a concept whose row changed (issue 12)."""
    table = concept_dir / "concepts.parquet"
    cfg = tiny_config(table, tmp_path / "r", run_id="nightly", **{"plan.num_images": 2})
    assert _run(cfg)[0].is_completed()
    root = Path(output_root(cfg))
    alpha = {p: p.read_bytes() for p in (root / "images" / "alpha").iterdir()}
    rows = pq.read_table(table).to_pylist()
    rows[1]["num_images"] = 1  # beta asks for one image now
    write_concept_table(rows, table)
    state, summary = _run(tiny_config(table, tmp_path / "r", run_id="nightly", **{"plan.num_images": 2}))
    assert state.is_completed() and not summary.already_complete
    assert {c: o.status for c, o in summary.concepts.items()} == {"alpha": "skipped", "beta": "completed"}
    df = pd.read_parquet(root / "manifest.parquet")
    assert (df.concept_id == "beta").sum() == 1 and len(list((root / "images" / "beta").iterdir())) == 1
    assert {p: p.read_bytes() for p in (root / "images" / "alpha").iterdir()} == alpha
