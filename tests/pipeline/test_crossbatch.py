"""Generation batched across concepts (``generation.batch_across_concepts``, issue 23): batch-
invariant it writes exactly the bytes of per-concept batches; a shared batch that fails, or a
concept whose write fails, fails only its own concept; the groups are whole in both drivers; the
option is not part of the run id. Demo model, 2 inversion and 2 generation steps."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from normguide.config import RunConfig
from normguide.data.seeds import SeedsFile
from normguide.diffusion import load_pipeline
from normguide.pipeline import crossbatch, output_root, resolved_run_id, run_dataset
from tests.factories import reference_table, tiny_config

IDS = (("a", 2), ("b", 2), ("c", 2))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models: a second intra-op thread buys nothing and, on a loaded machine, costs up to 20x
    (as tests/diffusion/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _table(tmp_path: Path) -> Path:
    return reference_table(tmp_path / "in" / "concepts.parquet", IDS, seed=lambda cid, i: 7 * i + ord(cid))


def _config(table, output, **overrides) -> RunConfig:
    # 3 concepts x 3 images at batch 4: batches a0 a1 a2 b0 | b1 b2 c0 c1 | c2 when across concepts
    return tiny_config(table, output, num_images=3, batch_size=4, guidance_scale=2.0,
                       **{"evaluation.enabled": False, **overrides})


def _files(root: Path) -> dict[str, bytes]:
    files = {str(p.relative_to(root)): p.read_bytes() for d in ("seeds", "images", "manifest")
             for p in sorted((root / d).rglob("*")) if p.is_file()}
    return {**files, "manifest.parquet": (root / "manifest.parquet").read_bytes()}


def test_batch_invariant_across_concepts_writes_the_bytes_of_per_concept_batches(tmp_path):
    table, model = _table(tmp_path), load_pipeline("demo:sd1")
    per_concept = _config(table, tmp_path / "off", **{"generation.batch_invariant": True})
    across = _config(table, tmp_path / "on", **{"generation.batch_invariant": True,
                                                "generation.batch_across_concepts": True})
    assert resolved_run_id(per_concept) == resolved_run_id(across)  # not part of the run id
    heard = []
    summary = run_dataset(across, model=model, progress=lambda n, total, o: heard.append((n, total, o.concept_id)))
    assert summary.ok and summary.finalized
    assert heard == [(1, 3, "a"), (2, 3, "b"), (3, 3, "c")]
    # the cost record: each concept's images, and the shared batches' time split among them
    assert [summary.concepts[c].generation.images for c in "abc"] == [3, 3, 3]
    assert all(summary.concepts[c].generation.seconds > 0 for c in "abc")
    assert summary.cost.images == 9
    assert run_dataset(per_concept, model=model).ok
    on, off = _files(Path(output_root(across))), _files(Path(output_root(per_concept)))
    assert len(on) == 3 + 9 + 3 + 1 and on.keys() == off.keys()
    assert [k for k in on if on[k] != off[k]] == []

    # resumed: b lost its part and one image; a and c are complete (skipped), b's two images are reused
    root = Path(output_root(across))
    (root / "manifest" / "part-b.parquet").unlink()
    min((root / "images" / "b").iterdir()).unlink()
    (root / "_SUCCESS").unlink()
    again = run_dataset(across, model=model)
    assert [(again.concepts[c].status, again.concepts[c].generated) for c in "abc"] == [
        ("skipped", 0), ("completed", 1), ("skipped", 0)]
    assert _files(root) == on


def test_a_failed_shared_batch_or_write_fails_only_its_own_concept(tmp_path, caplog):
    """Batches a0 a1 a2 b0 | b1 b2 c0 c1 | c2. a's images cannot be written (a file where its
    folder goes): a goes alone and fails; b's seed b1 is not finite: the batch b1 b2 c0 c1 fails,
    b and c go alone, b fails, c completes."""
    table, model = _table(tmp_path), load_pipeline("demo:sd1")
    cfg = _config(table, tmp_path / "out", **{"generation.batch_across_concepts": True})
    root = Path(output_root(cfg))
    assert run_dataset(cfg, model=model, concept_ids=["b"], finalize=False).ok  # b's seeds file
    seeds = SeedsFile.from_bytes((root / "seeds" / "b.safetensors").read_bytes())
    seeds.planned[1] = float("nan")
    (root / "seeds" / "b.safetensors").write_bytes(seeds.to_bytes())
    for p in sorted((root / "images").rglob("*"), reverse=True):
        p.unlink() if p.is_file() else p.rmdir()
    (root / "manifest" / "part-b.parquet").unlink()
    (root / "images" / "a").write_bytes(b"in the way")
    with caplog.at_level(logging.WARNING, logger="normguide"):
        summary = run_dataset(cfg, model=model)
    assert [summary.concepts[c].status for c in "abc"] == ["failed", "failed", "completed"]
    assert "finite" in summary.concepts["b"].error
    assert "concept a: writing its images failed" in caplog.text
    assert "a generation batch across concepts b, c failed" in caplog.text
    assert sorted(p.name for p in (root / "manifest").iterdir()) == ["part-c.parquet"]
    assert len(list((root / "images" / "c").iterdir())) == 3


def test_groups_are_whole_and_task_batches_hold_whole_groups(tmp_path):
    from normguide.data.schema import Concept

    cfg = _config(_table(tmp_path), tmp_path / "out")  # 3 images per concept, batch 4: groups of 16 images
    concepts = [Concept(concept_id=f"c{i}", name=f"c{i}", reference_uris=("x.png",),
                        num_images=(10 if i == 2 else None)) for i in range(9)]
    groups = crossbatch.groups(concepts, cfg)
    assert [[c.concept_id for c in g] for g in groups] == [
        ["c0", "c1", "c2"], ["c3", "c4", "c5", "c6", "c7", "c8"]]  # 3 + 3 + 10 >= 16; 18 >= 16
    for per_task in (1, 2, 4, 100):
        batches = crossbatch.task_batches(concepts, cfg, per_task)
        assert [c for b in batches for c in b] == concepts
        assert all(crossbatch.groups(b, cfg) == [g for g in groups if g[0] in b] for b in batches)
    assert crossbatch.groups(concepts[3:], cfg) == groups[1:]  # a list that starts at a group's start
