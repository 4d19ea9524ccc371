"""The norm-response flow (flows/norm_response.py) against the real Prefect API: on a tiny grid of
the demo it writes the curve.parquet bytes the library call writes, as one task tagged gpu."""

from pathlib import Path

import pandas as pd
from prefect.client.orchestration import get_client

from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from normguide.demo import digits
from normguide.flows.norm_response import norm_response
from normguide.pipeline.norm_response import run_norm_response

GRID = dict(judge="digits", radii=[0.5, 1.0], num_random=1, steps=2, concept_ids=["digit-two"])


def _config(tmp_path: Path) -> RunConfig:
    refs = []
    for i, im in enumerate(digits.reference_images(2, n=1)):
        im.save(tmp_path / f"two-{i}.png")
        refs.append(f"two-{i}.png")
    write_concept_table([{"concept_id": "digit-two", "name": "two", "reference_uris": refs}], tmp_path / "concepts.parquet")
    return RunConfig.model_validate({"concepts": str(tmp_path / "concepts.parquet"), "output": str(tmp_path / "runs"),
                                     "model": "demo", "inversion": {"num_inference_steps": 2}})


def test_flow_writes_the_library_calls_curve_bytes_in_one_gpu_task(tmp_path):
    cfg = _config(tmp_path)
    state = norm_response(config=cfg, output=str(tmp_path / "flow"), return_state=True, **GRID)
    assert state.is_completed(), state.message
    result = state.result()
    assert result["output"] == str(tmp_path / "flow") and "recognisability peaks" in result["verdict"]
    lib, where = run_norm_response(cfg, output=str(tmp_path / "lib"), **GRID)
    flow_curve, lib_curve = (tmp_path / "flow" / "curve.parquet").read_bytes(), (tmp_path / "lib" / "curve.parquet").read_bytes()
    assert flow_curve == lib_curve
    curve = pd.read_parquet(tmp_path / "flow" / "curve.parquet")
    assert sorted(set(curve.r)) == [0.5, 1.0] and set(curve.direction) == {"random", "inverted"}
    assert (tmp_path / "flow" / "verdict.md").read_text().strip() == lib.verdict.strip()
    with get_client(sync_client=True) as client:
        tasks = client.read_task_runs()
        flow_tasks = [t for t in tasks if t.flow_run_id == state.state_details.flow_run_id]
    assert [(t.name.split("-")[:3], sorted(t.tags)) for t in flow_tasks] == [(["measure", "norm", "response"], ["gpu"])]
