"""Concepts batched into tasks: bounded task runs per flow run, isolation inside a batch, and
the same bytes as the local driver (demo model, 2 inference steps)."""

import math
from pathlib import Path

import pandas as pd
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from normguide.data.schema import write_concept_table
from normguide.flows.generate_dataset import generate_dataset
from normguide.pipeline import output_root, resolved_run_id, run_dataset
from tests.helpers import make_reference

from .conftest import tiny_config

#: Task runs of a flow run besides the concept batches: prepare, load, check references,
#: start, find complete, finalize, wants-evaluation, exports, report, publish report/summary.
SETUP_TASK_RUNS = 12


def _table(root: Path, ids: list[str], name: str = "concepts.parquet") -> Path:
    rows = []
    for k, cid in enumerate(ids):
        ref = make_reference(root / "refs" / f"{cid}.png", seed=500 + k)
        rows.append({"concept_id": cid, "name": cid, "reference_uris": [str(ref)]})
    write_concept_table(rows, root / name)
    return root / name


def _config(table: Path, output: Path, **overrides):
    return tiny_config(table, output, **{"plan.num_images": 1, "inversion.reconstruction": False,
                                            "evaluation.enabled": False, **overrides})


def _task_runs(flow_run_id) -> list:
    runs, offset = [], 0
    with get_client(sync_client=True) as client:
        while page := client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                                            limit=200, offset=offset):
            runs += page
            offset += len(page)
    return runs


def _files(root: Path) -> dict[str, bytes]:
    """The dataset's bytes: seeds, images, manifest parts and the consolidated manifest."""
    files = {str(p.relative_to(root)): p.read_bytes() for d in ("seeds", "images", "manifest")
             for p in sorted((root / d).rglob("*")) if p.is_file()}
    return {**files, "manifest.parquet": (root / "manifest.parquet").read_bytes()}


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
@pytest.mark.parametrize("per_task", [3, None])
def test_batched_run_bounds_task_runs_and_writes_the_local_drivers_bytes(tmp_path, per_task):
    ids = [f"c{i}" for i in range(7)]
    table = _table(tmp_path / "in", ids)
    cfg = _config(table, tmp_path / "flow")
    state = generate_dataset(config=cfg, concepts_per_task=per_task, return_state=True)
    summary = state.result()
    assert state.is_completed() and summary.finalized, summary
    assert list(summary.concepts) == ids and {o.status for o in summary.concepts.values()} == {"completed"}

    # ceil(N / K) concept task runs (K = 1 below 64 concepts by default: one per concept, named by it)
    runs = _task_runs(state.state_details.flow_run_id)
    batches = sorted(r.name for r in runs if r.task_key.startswith("generate_concepts"))
    if per_task is None:
        assert batches == sorted(f"generate-{c}" for c in ids)
    else:
        assert batches == ["generate-c0..c2", "generate-c3..c5", "generate-c6"]
    assert len(batches) == math.ceil(len(ids) / (per_task or 1))
    assert len(runs) <= len(batches) + SETUP_TASK_RUNS, sorted(r.name for r in runs)

    # the local driver writes the same bytes
    local_cfg = _config(table, tmp_path / "local")
    assert resolved_run_id(local_cfg) == resolved_run_id(cfg)
    assert run_dataset(local_cfg).finalized
    flow_root, local_root = Path(output_root(cfg)), Path(output_root(local_cfg))
    flow_files, local_files = _files(flow_root), _files(local_root)
    assert len(flow_files) == 3 * len(ids) + 1  # a seeds file, an image and a part per concept
    assert flow_files.keys() == local_files.keys()
    assert [k for k in flow_files if flow_files[k] != local_files[k]] == []
    assert len(pd.read_parquet(flow_root / "manifest.parquet")) == len(ids)


def test_a_failing_concept_inside_a_batch_fails_alone(tmp_path):
    ids = ["first", "broken", "last"]
    cfg = _config(_table(tmp_path / "in", ids), tmp_path / "out")
    root = Path(output_root(cfg))
    # a file where the concept's image folder goes: its images cannot be written, so it fails
    # during the concept work, past the up-front checks
    blocker = root / "images" / "broken"
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"in the way")

    state = generate_dataset(config=cfg, concepts_per_task=3, return_state=True)
    summary = state.result(raise_on_failure=False)
    assert state.is_failed()
    assert summary.failed == ["broken"] and "broken" in summary.concepts["broken"].error, summary
    assert [summary.concepts[c].status for c in ("first", "last")] == ["completed", "completed"]
    (batch,) = [r for r in _task_runs(state.state_details.flow_run_id) if r.task_key.startswith("generate_concepts")]
    assert batch.state.is_completed() and batch.run_count == 1  # the task itself neither failed nor retried
    assert {p.name for p in (root / "manifest").iterdir()} == {"part-first.parquet", "part-last.parquet"}
    assert not (root / "_SUCCESS").exists()

    # fixed: the rerun runs only the broken concept, in one task of its own
    blocker.unlink()
    state = generate_dataset(config=cfg, concepts_per_task=3, return_state=True)
    summary = state.result()
    assert state.is_completed() and summary.finalized
    assert {c: o.status for c, o in summary.concepts.items()} == {"first": "skipped", "broken": "completed",
                                                                   "last": "skipped"}
    assert [r.name for r in _task_runs(state.state_details.flow_run_id)
            if r.task_key.startswith("generate_concepts")] == ["generate-broken"]


def test_concepts_per_task_below_one_is_refused(tmp_path):
    table = _table(tmp_path / "in", ["a"])
    state = generate_dataset(config=_config(table, tmp_path / "out"), concepts_per_task=0, return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="concepts_per_task must be >= 1.*got 0"):
        state.result()
