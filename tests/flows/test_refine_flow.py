"""Refinement on (normguide.pipeline.refine) in the Prefect flow: the local driver's bytes."""

from pathlib import Path

import pandas as pd
import pytest

from normguide.data.seeds import SeedsFile
from normguide.flows.generate_dataset import generate_dataset
from normguide.pipeline import output_root, run_dataset

from .test_batching import _config, _files, _table

REFINE = {"refine.enabled": True, "refine.iterations": 1, "refine.num_inference_steps": 3}


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_flow_and_local_driver_write_the_same_bytes_with_refinement_on(tmp_path):
    table = _table(tmp_path / "in", ["r0"])
    cfg = _config(table, tmp_path / "flow", **REFINE)
    state = generate_dataset(config=cfg, return_state=True)
    assert state.is_completed() and state.result().finalized
    local = _config(table, tmp_path / "local", **REFINE)
    assert run_dataset(local).finalized
    flow_root, local_root = Path(output_root(cfg)), Path(output_root(local))
    flow_files, local_files = _files(flow_root), _files(local_root)
    assert flow_files.keys() == local_files.keys() and len(flow_files) == 4
    assert [k for k in flow_files if flow_files[k] != local_files[k]] == []
    assert SeedsFile.from_bytes(flow_files["seeds/r0.safetensors"]).is_refined
    assert pd.read_parquet(flow_root / "manifest.parquet").refine_iterations.tolist() == [1]
