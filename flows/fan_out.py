"""The fan-out parent: one large run split into shards, each its own flow run on GPU workers.

Entry point for deployments: ``flows/fan_out.py:generate_dataset_fan_out``.

Each shard is a flow run of the generation deployment (``generate-dataset/<name>``) with
``concept_ids=<the shard>`` and ``finalize=False``, so as many GPU workers as the work pool has
process shards at once. The parent waits for all of them, names the shards that failed, and
only when every concept has its manifest part consolidates ``manifest.parquet`` and writes
``_SUCCESS``, then evaluates, exports and writes the report and dataset card, as a whole run does. Whether a concept is done is read from storage (its manifest part), never from
Prefect's run history, so a rerun (same configuration, hence same run id) launches only the
shards that still miss parts, narrowed to the missing concepts.
"""

# No ``from __future__ import annotations``: Prefect builds the flow's parameter model from its
# annotations, and a served flow run (``flow.serve``, ``register serve``) gets the flow pickled
# by value, which keeps only the globals the code uses: string annotations naming RunConfig
# would no longer resolve there ("Generate_DatasetModel is not fully defined").
import math
from typing import Any

from prefect import flow, get_run_logger
from prefect.states import Failed

from normguide.config import RunConfig
from normguide.sharding import pending_shards, split_into_shards
from normguide.tasks.context import run_context
from normguide.tasks.fan_out import launch_shard, wait_for_flow_runs
from normguide.tasks.run_setup import (
    evaluate_and_publish,
    finalize_run,
    find_missing_parts,
    forget_shard_costs,
    is_run_complete,
    load_concepts,
    record_fan_out_cost,
)

#: With no ``shard_size``: shards of ``max(16, ceil(N / 64))`` concepts, so a table of any size
#: gives at most 64 shard flow runs (the parent holds two task runs per shard: its launch and
#: the link to the child run) and each shard flow run at most 64 concept task runs.
DEFAULT_SHARD_SIZE, MAX_SHARDS = 16, 64


@flow(name="generate-dataset-fan-out", log_prints=True, validate_parameters=True)
def generate_dataset_fan_out(
    config: RunConfig = RunConfig(),
    shard_size: int | None = None,
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
        shard_size: Concepts per shard (see deployments/README.md for sizing with N GPUs);
            default ``max(16, ceil(N / 64))`` for a table of ``N``: at most 64 shards.
        deployment: The generation deployment that runs each shard, ``flow-name/deployment``.
        poll_interval_s: Seconds between checks of the shard runs' states.
        timeout_s: Give up waiting after this long; shards still running are reported failed.

    Returns:
        ``{"run_id", "output_root", "shards": {name: {"concepts", "flow_run", "state"}},
        "launched", "already_done", "failed", "manifest_uri", "cost"}`` (``cost``: the launched
        shards' generation summed, as recorded in run.json; None when they generated nothing);
        once complete also ``"evaluation"``, ``"exports"``, ``"card_uri"`` and, for a step that
        failed, ``"evaluation_error"`` / ``"report_error"``.
    """
    logger = get_run_logger()

    # 1. Check inputs: no secrets may travel as parameters
    if secret_fields := config.inline_secrets():
        raise ValueError(
            f"config sets {', '.join(secret_fields)}: shard parameters are stored by the Prefect "
            "API in plain text; give credentials via storage.aws_credentials_block or the workers' environment"
        )
    if shard_size is not None and shard_size < 1:
        raise ValueError(f"shard_size must be >= 1 (or None for max(16, ceil(N / {MAX_SHARDS}))), got {shard_size}")
    if poll_interval_s <= 0:
        raise ValueError(f"poll_interval_s must be > 0, got {poll_interval_s}")
    # the concept table, read once here (credentials resolved in this process); the run id it
    # gives is fixed for the shards, which share the parent's run
    ctx = run_context(config)
    table, root = ctx.table, ctx.storage.root
    config = config.pinned(table.digest)
    if is_run_complete(config, table):
        logger.info("run %s is already complete at %s: nothing to do", config.run_id, root)
        return {"run_id": config.run_id, "output_root": root, "shards": {}, "launched": [],
                "already_done": [], "failed": [], "manifest_uri": None, "cost": None,
                "already_complete": True}

    # the run's lease, held while the shards run and until the manifest is consolidated: a second
    # fan-out (or a whole run) of the same dataset is refused, naming the holder; each shard run
    # claims its own concepts; finalizing upgrades this claim to every concept (no writer left)
    with ctx.storage.acquire_lease(owner=f"fan-out {config.run_id}", coordinator=True):
        # 2. Split the concept table into shards with stable names
        concepts = load_concepts(config, table)
        concept_ids = [c.concept_id for c in concepts]
        shard_size = shard_size or max(DEFAULT_SHARD_SIZE, math.ceil(len(concept_ids) / MAX_SHARDS))
        shards = split_into_shards(concept_ids, shard_size)

        # 3. Keep the shards whose concepts still miss a manifest part, or have one made for an
        #    earlier version of their row (a rerun redoes only those)
        todo = pending_shards(shards, find_missing_parts(config, table, concepts))
        done = [s.name for s in shards if s.name not in {p.name for p in todo}]
        logger.info("run %s: %d concepts in %d shards of <= %d; %d already done, %d to run",
                    config.run_id, len(concept_ids), len(shards), shard_size, len(done), len(todo))

        # 4. Launch one flow run of the generation deployment per pending shard (each records
        #    its generation's cost for this parent to sum; earlier runs' records go first)
        forget_shard_costs(config, table, [list(s.concept_ids) for s in todo])
        runs = {shard.name: launch_shard(config, shard, deployment) for shard in todo}

        # 5. Wait until every shard run is final; their costs summed into run.json, as a local run's
        final = wait_for_flow_runs(runs, poll_interval_s=poll_interval_s, timeout_s=timeout_s)
        cost = record_fan_out_cost(config, table, [list(s.concept_ids) for s in todo])

        # 6. Report failed shards by name; a Completed run whose parts are missing also failed
        still_missing = set(find_missing_parts(config, table, concepts))
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
        summary = {"run_id": config.run_id, "output_root": root, "shards": report,
                   "launched": list(runs), "already_done": done, "failed": failed, "manifest_uri": None,
                   "cost": None if cost is None else cost.model_dump(mode="json")}
        if failed:
            # a Failed final state that still carries the summary; nothing is consolidated
            return Failed(
                message=f"run {config.run_id}: {len(failed)} of {len(shards)} shard(s) failed: {', '.join(failed)}; "
                "rerun the same configuration to redo only those",
                data=summary,
            )

        # 7. Consolidate the manifest and write _SUCCESS, once, after every shard is done
        summary["manifest_uri"] = finalize_run(config, table, concept_ids)
        logger.info("run %s complete: %s", config.run_id, summary["manifest_uri"])

        # 8. Evaluate, export and report as a whole run does (the dataset card carries the summed
        #    cost); a failure here is logged and in the summary, and leaves the dataset as it is
        summary.update(evaluate_and_publish(config, table, [c.name for c in concepts]))
        return summary


if __name__ == "__main__":
    generate_dataset_fan_out()
