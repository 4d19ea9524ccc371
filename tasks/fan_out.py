"""Tasks of the fan-out parent (``flows/fan_out.py``): start shard flow runs and wait for them."""

from __future__ import annotations

import time
from uuid import UUID

from prefect import get_run_logger, task
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterName,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.deployments import run_deployment

from normguide.config import RunConfig
from normguide.sharding import Shard

#: Shard runs in these states are still going; a rerun attaches to them instead of launching twice.
_ACTIVE = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]


@task(name="launch-shard", task_run_name="launch-{shard.name}", retries=2, retry_delay_seconds=5)
def launch_shard(config: RunConfig, shard: Shard, deployment: str) -> UUID:
    """Start the shard's flow run of ``deployment``, or attach to one still active from an
    earlier attempt (same name: ``<run_id>-<shard>``); ``config`` is pinned (its run_id set)."""
    logger = get_run_logger()
    name = f"{config.run_id}-{shard.name}"
    with get_client(sync_client=True) as client:
        dep = client.read_deployment_by_name(deployment)
        active = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
            flow_run_filter=FlowRunFilter(
                name=FlowRunFilterName(any_=[name]),
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_ACTIVE)),
            ),
            limit=1,
        )
    if active:
        logger.info("%s: attaching to flow run %s (%s) still active", shard.name, name, active[0].state_name)
        return active[0].id
    run = run_deployment(
        name=deployment,
        parameters={"config": config.model_dump(mode="json"), "concept_ids": list(shard.concept_ids), "finalize": False},
        flow_run_name=name,
        tags=["normguide", "shard"],
        timeout=0,  # launch only; wait_for_flow_runs waits for all shards together
    )
    logger.info("%s: launched flow run %s for %d concept(s)", shard.name, name, len(shard.concept_ids))
    return run.id


@task(name="wait-for-shard-runs")
def wait_for_flow_runs(runs: dict[str, UUID], *, poll_interval_s: float, timeout_s: float) -> dict[str, dict[str, str]]:
    """Poll until every run is in a final state; ``{shard: {"name", "state"}}``. Runs still
    going after ``timeout_s`` are reported with their current state."""
    logger = get_run_logger()
    final: dict[str, dict[str, str]] = {}
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            for shard, run_id in runs.items():
                if shard in final:
                    continue
                fr = client.read_flow_run(run_id)
                if fr.state is not None and fr.state.is_final():
                    final[shard] = {"name": fr.name, "state": fr.state.name}
                    logger.info("%s: flow run %s %s", shard, fr.name, fr.state.name)
            if len(final) == len(runs):
                return final
            if time.monotonic() > deadline:
                for shard, run_id in runs.items():
                    if shard not in final:
                        fr = client.read_flow_run(run_id)
                        final[shard] = {"name": fr.name, "state": f"still {fr.state_name} after {timeout_s:g} s"}
                return final
            time.sleep(poll_interval_s)
