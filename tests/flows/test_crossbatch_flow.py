"""Batches across concepts under Prefect (issue 23): the flow gives each ``generate-concepts`` task
whole groups of concepts, so it forms the local driver's batches and writes its bytes, in the
default batched mode too (demo model, 2 steps)."""

from pathlib import Path

import pytest
import torch

from normguide.flows.generate_dataset import generate_dataset
from normguide.pipeline import output_root, run_dataset

from .conftest import tiny_config
from .test_batching import _files, _table, _task_runs


@pytest.fixture(autouse=True)
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.slow  # a flow run and a local run (~15 s under load): with the other flow comparisons
def test_the_flow_batches_across_concepts_as_the_local_driver_and_writes_its_bytes(tmp_path):
    ids = [f"c{i}" for i in range(5)]
    table = _table(tmp_path / "in", ids)
    overrides = {"inversion.reconstruction": False, "evaluation.enabled": False,
                 "generation.batch_across_concepts": True}  # 3 images per concept at batch 2: groups of >= 8
    cfg = tiny_config(table, tmp_path / "flow", **overrides)
    state = generate_dataset(config=cfg, concepts_per_task=2, return_state=True)
    summary = state.result()
    assert state.is_completed() and summary.finalized and summary.ok, summary
    names = sorted(r.name for r in _task_runs(state.state_details.flow_run_id) if r.task_key.startswith("generate_concepts"))
    assert names == ["generate-c0..c2", "generate-c3..c4"]  # whole groups: c0-c2 (9 images), c3-c4

    local = tiny_config(table, tmp_path / "local", **overrides)
    assert run_dataset(local).ok
    flow_files, local_files = _files(Path(output_root(cfg))), _files(Path(output_root(local)))
    assert len(flow_files) == 5 * (1 + 3 + 1) + 1 and flow_files.keys() == local_files.keys()
    assert [k for k in flow_files if flow_files[k] != local_files[k]] == []
