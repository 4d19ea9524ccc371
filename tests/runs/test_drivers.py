"""The two drivers of one pipeline: the local driver and the Prefect flow write the same dataset,
locally and on S3."""

from __future__ import annotations

import pytest

from normguide.pipeline import run_dataset

from .conftest import (
    assert_same_dataset,
    check_consistent,
    run_config,
    run_flow,
    snapshot,
)


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_local_and_prefect_drivers_write_the_same_bytes(inputs, tmp_path):
    methods = {"plan.methods": ("nao", "slerp", "random")}
    local = run_config(inputs.local_table, str(tmp_path / "local"), **methods)
    flow = run_config(inputs.local_table, str(tmp_path / "flow"), **methods)
    summary = run_dataset(local)
    state, flow_summary = run_flow(flow)
    assert summary.finalized and state.is_completed() and flow_summary.finalized
    timeless = lambda s: {c: o.model_copy(update={"generation": None}) for c, o in s.concepts.items()}  # noqa: E731
    assert timeless(summary) == timeless(flow_summary)  # all but the measured seconds of each concept
    assert (summary.cost.images, summary.cost.flops_per_image) == (flow_summary.cost.images, flow_summary.cost.flops_per_image)
    a, b = snapshot(local), snapshot(flow)
    check_consistent(a)
    assert_same_dataset(a, b)


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_local_driver_on_s3_equals_the_flow_on_s3(inputs, s3_server, s3_bucket):
    local = run_config(inputs.s3_table, f"s3://{s3_bucket}/local", storage=s3_server.env_storage)
    flow = run_config(inputs.s3_table, f"s3://{s3_bucket}/flow", storage=s3_server.env_storage)
    summary = run_dataset(local)
    assert summary.finalized and summary.output_root.startswith(f"s3://{s3_bucket}/local/run-")
    state, _ = run_flow(flow)
    assert state.is_completed()
    assert_same_dataset(snapshot(local), snapshot(flow))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["demo:flux", "demo:sd3", "demo:pixart"])
def test_the_drivers_agree_on_the_new_families(inputs, tmp_path, model):
    """Issue 21: a whole run of each new tiny build (flow matching: FLUX, SD3; DDIM: PixArt) through both drivers, same bytes."""
    overrides = {"model": model, "plan.num_images": 2, "evaluation.enabled": False}
    local = run_config(inputs.local_table, str(tmp_path / "local"), **overrides)
    flow = run_config(inputs.local_table, str(tmp_path / "flow"), **overrides)
    summary = run_dataset(local)
    state, flow_summary = run_flow(flow)
    assert summary.finalized and state.is_completed() and flow_summary.finalized
    a, b = snapshot(local), snapshot(flow)
    check_consistent(a)
    assert_same_dataset(a, b)
    assert any(k.startswith("images/") and k.endswith(".png") for k in a)
