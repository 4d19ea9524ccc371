"""The refinement stage of a run (normguide.pipeline.refine): resumable, byte-identical, refused
before any work on bad input; demo model, a few steps."""

import json
from pathlib import Path

import pandas as pd
import pytest

from normguide import progress
from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from normguide.data.seeds import SeedsFile
from normguide.demo import digits as D
from normguide.pipeline import output_root, resolved_run_id, run_dataset


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("refine-in")
    refs = []
    for i, im in enumerate(D.reference_images(2, 3)):
        im.save(root / f"two-{i}.png")
        refs.append(str(root / f"two-{i}.png"))
    write_concept_table([{"concept_id": "two", "name": "two", "reference_uris": refs,
                          "prompt": D.prompt_for(2), "num_images": None}], root / "concepts.parquet")
    return root / "concepts.parquet"


def config(table: Path, output: Path, **refine) -> RunConfig:
    return RunConfig.model_validate({
        "concepts": str(table), "output": str(output), "model": "demo",
        "inversion": {"num_inference_steps": 3, "reconstruction": False},
        "generation": {"num_inference_steps": 3, "guidance_scale": 2.0, "batch_size": 2},
        "plan": {"methods": ["nao", "random"], "num_images": 1},
        "refine": {"enabled": True, "iterations": 2, "num_inference_steps": 3, "batch_size": 1, **refine},
        "evaluation": {"enabled": False},
    })


def _files(root: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(root)): p.read_bytes() for d in ("seeds", "images", "manifest")
             for p in sorted((root / d).rglob("*")) if p.is_file()}
    return {**files, "manifest.parquet": (root / "manifest.parquet").read_bytes()}


class _InterruptAfterFirstRefinedSeed(progress.LogReporter):
    """A reporter that presses Ctrl-C once the refinement stage has saved its first batch."""

    def __init__(self):
        super().__init__()
        self.refined: list[int] = []

    def advanced(self, stage):
        if stage.name == "refinement":
            self.refined.append(stage.done)
            raise KeyboardInterrupt

    def started(self, stage):
        if stage.name == "refinement":
            self.refined.append(-stage.total)  # how many seeds this run still had to refine


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_refined_seeds_resume_after_ctrl_c_and_are_byte_identical(table, tmp_path):
    # an uninterrupted run
    clean = config(table, tmp_path / "clean")
    assert run_dataset(clean).finalized
    clean_root = Path(output_root(clean))
    seeds = SeedsFile.from_bytes((clean_root / "seeds/two.safetensors").read_bytes())
    assert seeds.is_refined and seeds.refined.shape == seeds.planned.shape
    assert not seeds.refined.equal(seeds.planned)
    manifest = pd.read_parquet(clean_root / "manifest.parquet")
    assert list(manifest.refine_start) == ["nao", "random"] and list(manifest.refine_preset) == ["nao", "random"]
    assert list(manifest.refine_iterations) == [2, 2] and not manifest.refine_fallback.any()
    assert manifest[["refine_semantic_start", "refine_semantic_end", "refine_appearance_start",
                     "refine_appearance_end", "refine_start_zscore", "seed_zscore"]].notna().all().all()
    timings = json.loads((clean_root / "timings/refine-two.json").read_bytes())["seconds"]
    assert sorted(timings) == sorted(manifest.image_id) and all(v > 0 for v in timings.values())

    # Ctrl-C after the first refined seed; the rerun refines only the other one
    cfg = config(table, tmp_path / "resumed")
    reporter = _InterruptAfterFirstRefinedSeed()
    old = progress.set_reporter(reporter)
    try:
        with pytest.raises(KeyboardInterrupt):
            run_dataset(cfg)
    finally:
        progress.set_reporter(old)
    root = Path(output_root(cfg))
    assert json.loads((root / "run.json").read_bytes())["status"] == "interrupted"
    partial = SeedsFile.from_bytes((root / "seeds/two.safetensors").read_bytes())
    assert [r is not None for r in partial.refine_rows] == [True, False] and not partial.is_refined
    assert not (root / "images").exists()  # generation never started
    watch = _InterruptAfterFirstRefinedSeed()
    watch.advanced = lambda stage: None
    old = progress.set_reporter(watch)
    try:
        assert run_dataset(cfg).finalized
    finally:
        progress.set_reporter(old)
    assert watch.refined == [-1]  # one seed left to refine
    assert _files(root) == _files(clean_root)  # the same bytes as the uninterrupted run

    # a rerun of a complete run reuses everything (no refinement)
    assert run_dataset(cfg).already_complete


def test_refinement_changes_the_run_id_only_when_on(table, tmp_path):
    off = config(table, tmp_path).with_overrides(**{"refine.enabled": False})
    plain = RunConfig.model_validate({**off.model_dump(mode="json", exclude={"refine"})})
    assert resolved_run_id(off) == resolved_run_id(plain)
    assert resolved_run_id(config(table, tmp_path)) != resolved_run_id(plain)
    assert (resolved_run_id(config(table, tmp_path))
            == resolved_run_id(config(table, tmp_path).with_overrides(**{"refine.gradient_checkpointing": False})))


@pytest.mark.parametrize("feature_model, match", [
    ("missing-dir", r"refine\.feature_model: model directory .*missing-dir.* does not exist"),
    ("not-clip", r"refine\.feature_model: .*not-clip.* is not a CLIP model directory \(config.json has model_type 'bert'"),
])
def test_a_bad_feature_model_is_refused_before_any_work(table, tmp_path, feature_model, match):
    bad = tmp_path / feature_model
    if feature_model == "not-clip":
        bad.mkdir()
        (bad / "config.json").write_text(json.dumps({"model_type": "bert"}))
    cfg = config(table, tmp_path / "out", feature_model=str(bad))
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        run_dataset(cfg)
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.safetensors"))


def test_auto_feature_model_needs_the_demo_model(table, tmp_path):
    cfg = config(table, tmp_path / "out").with_overrides(model="demo:sd1")
    with pytest.raises(ValueError, match=r"refine\.feature_model: model 'demo:sd1' has no built-in feature model"):
        run_dataset(cfg)
    assert not list((tmp_path / "out").rglob("run.json"))


def test_bad_refine_settings_name_the_field(table, tmp_path):
    with pytest.raises(ValueError, match=r"refine\.num_inference_steps must be at least"):
        config(table, tmp_path, num_inference_steps=2)
    with pytest.raises(ValueError, match="refine.guidance_scale"):
        config(table, tmp_path, guidance_scale=0.5)
