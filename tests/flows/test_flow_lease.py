"""The Prefect driver holds the run's lease like the local one (issue 12)."""

from __future__ import annotations

import pytest

from normguide.data.storage import LeaseHeld
from normguide.flows.generate_dataset import generate_dataset
from normguide.pipeline import RunContext

from .conftest import tiny_config


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_a_flow_run_is_refused_while_another_run_holds_the_lease(concept_dir, tmp_path):
    ctx = RunContext.create(tiny_config(concept_dir / "concepts.parquet", tmp_path / "out"))
    cfg, store = ctx.config, ctx.storage  # pinned: its run_id set
    held = store.acquire_lease(owner="run on another host")
    try:
        state = generate_dataset(config=cfg, return_state=True)
        assert state.is_failed()
        error = state.result(raise_on_failure=False)
        assert isinstance(error, LeaseHeld) and "run on another host" in str(error)
        assert not store.exists("run.json")  # refused before the model loaded or anything was written
    finally:
        held.release()
    state = generate_dataset(config=cfg, return_state=True)
    assert state.is_completed() and store.exists("_SUCCESS") and not store.exists("_LEASE")
