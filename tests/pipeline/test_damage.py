"""Damaged outputs of an earlier run (issue 12): a resume verifies what it reuses, names what is
damaged and rebuilds it, instead of failing on every rerun with an error that names no file.

Real runs of the local driver (``run_dataset``) on the tiny demo model; the damage is done to
the real files: a truncated manifest part, an empty and a truncated image, a truncated seeds
file. After the rerun the dataset equals a clean run's, byte for byte.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from normguide.config import RunConfig
from normguide.diffusion import load_pipeline
from normguide.pipeline import resolved_run_id, run_dataset
from tests.factories import reference_table


@pytest.fixture(scope="module")
def model():
    return load_pipeline("demo:sd1")


@pytest.fixture
def table(tmp_path):
    return reference_table(tmp_path / "in" / "concepts.parquet", (("alpha", 2), ("beta", 2)),
                           seed=lambda cid, i: 11 * i + len(cid))


def _config(table, output) -> RunConfig:
    return RunConfig.model_validate({
        "concepts": str(table), "output": str(output), "model": "demo:sd1",
        "inversion": {"num_inference_steps": 2, "reconstruction": False},
        "generation": {"num_inference_steps": 2, "guidance_scale": 2.0, "batch_size": 2},
        "plan": {"methods": ["nao"], "num_images": 4},
    })


def _files(root: Path) -> dict[str, bytes]:
    """The dataset's data files (images, seeds, manifest parts and manifest, _SUCCESS): the ones
    two runs write byte for byte the same (test_idempotency.py)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and (p.parts[len(root.parts)] in ("images", "seeds", "manifest")
                                or p.name in ("manifest.parquet", "_SUCCESS"))}


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _clean_run(table, tmp_path, model) -> tuple[RunConfig, Path, dict[str, bytes]]:
    cfg = _config(table, tmp_path / "out")
    summary = run_dataset(cfg, model=model)
    assert summary.ok and summary.finalized
    root = tmp_path / "out" / resolved_run_id(cfg)
    return cfg, root, _files(root)


def test_damaged_part_and_images_of_a_finished_concept_are_named_and_rebuilt(table, tmp_path, model, caplog):
    cfg, root, clean = _clean_run(table, tmp_path, model)
    # an earlier run was interrupted before it finalized, and left damage behind
    (root / "_SUCCESS").unlink()
    (root / "manifest.parquet").unlink()
    part = root / "manifest" / "part-alpha.parquet"
    _truncate(part)
    beta = sorted((root / "images" / "beta").glob("*.png"))
    beta[0].write_bytes(b"")
    _truncate(beta[1])

    with caplog.at_level(logging.WARNING, logger="normguide.pipeline.steps"):
        summary = run_dataset(cfg, model=model)
    assert summary.ok and summary.finalized, summary
    assert summary.concepts["alpha"].status == "completed"  # rebuilt, not skipped
    assert summary.concepts["beta"].status == "completed"
    log = caplog.text
    assert str(part) in log and "unreadable" in log
    assert f"{beta[0]} (empty (0 bytes))" in log
    assert str(beta[1]) in log and "sha256" in log
    assert _files(root) == clean


def test_damaged_seeds_and_images_of_an_unfinished_concept_are_named_and_rebuilt(table, tmp_path, model, caplog):
    cfg, root, clean = _clean_run(table, tmp_path, model)
    # interrupted mid-generation of beta: no part yet, and damage in what exists
    for name in ("_SUCCESS", "manifest.parquet", "manifest/part-beta.parquet"):
        (root / name).unlink()
    seeds = root / "seeds" / "beta.safetensors"
    _truncate(seeds)
    beta = sorted((root / "images" / "beta").glob("*.png"))
    beta[0].write_bytes(b"")
    _truncate(beta[1])

    with caplog.at_level(logging.WARNING, logger="normguide.pipeline.steps"):
        summary = run_dataset(cfg, model=model)
    assert summary.ok and summary.finalized, summary
    assert summary.concepts["alpha"].status == "skipped"  # verified, reused
    log = caplog.text
    assert f"{seeds} is not a readable normguide seeds file" in log and "inverted again" in log
    assert f"{beta[0]} (empty (0 bytes))" in log
    assert f"{beta[1]} (not a readable image" in log
    assert _files(root) == clean


def test_a_verified_concept_is_reused_and_no_warning_is_logged(table, tmp_path, model, caplog):
    cfg, root, clean = _clean_run(table, tmp_path, model)
    (root / "_SUCCESS").unlink()
    with caplog.at_level(logging.WARNING, logger="normguide.pipeline.steps"):
        summary = run_dataset(cfg, model=model)
    assert {c.status for c in summary.concepts.values()} == {"skipped"}
    assert not caplog.records
    assert _files(root) == clean
