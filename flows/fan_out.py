"""The fan-out parent: one large run split into shards, each its own flow run on GPU workers.

Entry point for deployments: ``flows/fan_out.py:generate_dataset_fan_out``.

Each shard is a flow run of the generation deployment (``generate-dataset/<name>``) with
``concept_ids=<the shard>`` and ``finalize=False``, so as many GPU workers as the work pool has
process shards at once. The parent waits for all of them, names the shards that failed, and
only when every concept has its manifest part consolidates ``manifest.parquet`` and writes
``_SUCCESS``. Whether a concept is done is read from storage (its manifest part), never from
Prefect's run history, so a rerun (same configuration, hence same run id) launches only the
shards that still miss parts, narrowed to the missing concepts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any
from uuid import UUID

# Deployments load this file from a checkout by path: make the checkout importable.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from prefect import flow, get_run_logger  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.filters import (  # noqa: E402
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterName,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import StateType  # noqa: E402
from prefect.deployments import run_deployment  # noqa: E402
from prefect.states import Failed  # noqa: E402

from normguide.config import RunConfig  # noqa: E402
from normguide.run import output_root  # noqa: E402
from normguide.sharding import Shard, pending_shards, split_into_shards  # noqa: E402
from tasks.fan_out import find_missing_parts  # noqa: E402
from tasks.run_setup import finalize_run, is_run_complete, load_concepts  # noqa: E402

#: Shard runs in these states are still going; a rerun attaches to them instead of launching twice.
_ACTIVE = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]


@flow(name="generate-dataset-fan-out", log_prints=True, validate_parameters=True)
def generate_dataset_fan_out(
    config: RunConfig = RunConfig(),
    shard_size: int = 16,
    deployment: str = "generate-dataset/gpu-kubernetes",
    poll_interval_s: float = 10.0,
    timeout_s: float = 48 * 3600,
) -> dict:
    """Split the concept table into shards and run each as a flow run of ``deployment``.

    Args:
        config: The run configuration; every shard gets it unchanged (same run id, same output
            root). Credentials must come from a block or the workers' environment: a config
            with ``storage.key``/``secret``/``token`` is refused, since deployment parameters
            are stored in plain text by the Prefect API.
        shard_size: Concepts per shard (see deployments/README.md for sizing with N GPUs).
        deployment: The generation deployment that runs each shard, ``flow-name/deployment``.
        poll_interval_s: Seconds between checks of the shard runs' states.
        timeout_s: Give up waiting after this long; shards still running are reported failed.

    Returns:
        ``{"run_id", "output_root", "shards": {name: {"concepts", "flow_run", "state"}},
        "launched", "already_done", "failed", "manifest_uri"}``.
    """
    logger = get_run_logger()

    # 1. Check inputs: no secrets may travel as parameters
    secret_fields = [k for k in ("key", "secret", "token") if getattr(config.storage, k) is not None]
    if secret_fields:
        raise ValueError(
            f"config.storage.{'/'.join(secret_fields)} is set: shard parameters are stored by the Prefect "
            "API in plain text; give credentials via storage.aws_credentials_block or the workers' environment"
        )
    if poll_interval_s <= 0:
        raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
    config = config.with_overrides(run_id=config.resolved_run_id())  # shards and parent share it
    if is_run_complete(config):
        logger.info("run %s is already complete at %s: nothing to do", config.run_id, output_root(config))
        return {"run_id": config.run_id, "output_root": output_root(config), "shards": {}, "launched": [],
                "already_done": [], "failed": [], "manifest_uri": None, "already_complete": True}

    # 2. Split the concept table into shards with stable names
    concept_ids = [c.concept_id for c in load_concepts(config)]
    shards = split_into_shards(concept_ids, shard_size)

    # 3. Keep the shards whose concepts still miss a manifest part (a rerun redoes only those)
    todo = pending_shards(shards, find_missing_parts(config, concept_ids))
    done = [s.name for s in shards if s.name not in {p.name for p in todo}]
    logger.info("run %s: %d concepts in %d shards of <= %d; %d already done, %d to run",
                config.run_id, len(concept_ids), len(shards), shard_size, len(done), len(todo))

    # 4. Launch one flow run of the generation deployment per pending shard
    runs = {shard.name: _launch_shard(config, shard, deployment) for shard in todo}

    # 5. Wait until every shard run is final
    final = _wait_for_runs(runs, poll_interval_s=poll_interval_s, timeout_s=timeout_s)

    # 6. Report failed shards by name; a Completed run whose parts are missing also failed
    still_missing = set(find_missing_parts(config, concept_ids))
    report: dict[str, dict[str, Any]] = {}
    failed = []
    for shard in todo:
        run = final[shard.name]
        lacking = [c for c in shard.concept_ids if c in still_missing]
        report[shard.name] = {"concepts": list(shard.concept_ids), "flow_run": run["name"], "state": run["state"]}
        if lacking:
            failed.append(shard.name)
            report[shard.name]["missing"] = lacking
            logger.error("%s failed (flow run %s, %s): no manifest part for %s",
                         shard.name, run["name"], run["state"], lacking)
    summary = {"run_id": config.run_id, "output_root": output_root(config), "shards": report,
               "launched": list(runs), "already_done": done, "failed": failed, "manifest_uri": None}
    if failed:
        # a Failed final state that still carries the summary; nothing is consolidated
        return Failed(
            message=f"run {config.run_id}: {len(failed)} of {len(shards)} shard(s) failed: {', '.join(failed)}; "
            "rerun the same configuration to redo only those",
            data=summary,
        )

    # 7. Consolidate the manifest and write _SUCCESS, once, after every shard is done
    summary["manifest_uri"] = finalize_run(config, concept_ids)
    logger.info("run %s complete: %s", config.run_id, summary["manifest_uri"])
    return summary


def _launch_shard(config: RunConfig, shard: Shard, deployment: str) -> UUID:
    """Start the shard's flow run, or attach to one still active from an earlier attempt."""
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
        print(f"{shard.name}: attaching to flow run {name} ({active[0].state_name}) still active")
        return active[0].id
    run = run_deployment(
        name=deployment,
        parameters={"config": config.model_dump(mode="json"), "concept_ids": list(shard.concept_ids), "finalize": False},
        flow_run_name=name,
        tags=["normguide", "shard"],
        timeout=0,  # launch only; step 5 waits for all shards together
    )
    print(f"{shard.name}: launched flow run {name} for {len(shard.concept_ids)} concept(s)")
    return run.id


def _wait_for_runs(runs: dict[str, UUID], *, poll_interval_s: float, timeout_s: float) -> dict[str, dict[str, str]]:
    """Poll until every run is in a final state; ``{shard: {"name", "state"}}``."""
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
                    print(f"{shard}: flow run {fr.name} {fr.state.name}")
            if len(final) == len(runs):
                return final
            if time.monotonic() > deadline:
                for shard, run_id in runs.items():
                    if shard not in final:
                        fr = client.read_flow_run(run_id)
                        final[shard] = {"name": fr.name, "state": f"still {fr.state_name} after {timeout_s:g} s"}
                return final
            time.sleep(poll_interval_s)


if __name__ == "__main__":
    generate_dataset_fan_out()
