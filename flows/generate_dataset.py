"""The main job: a concept table in, a synthetic image dataset (images + manifest) out.

Entry point for deployments: ``flows/generate_dataset.py:generate_dataset``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Deployments load this file from a checkout by path: make the checkout importable.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from prefect import flow, get_run_logger  # noqa: E402
from prefect.states import Failed  # noqa: E402

from normguide.config import RunConfig  # noqa: E402
from tasks.concepts import generate_images, invert_references, plan_seeds  # noqa: E402
from tasks.reporting import publish_summary  # noqa: E402
from tasks.run_setup import finalize_run, load_concepts, prepare_run  # noqa: E402


@flow(name="generate-dataset", log_prints=True, validate_parameters=True)
def generate_dataset(
    config: RunConfig = RunConfig(),
    concept_ids: list[str] | None = None,
    finalize: bool = True,
) -> dict:
    """Generate a synthetic image dataset from a concept table.

    Args:
        config: The run configuration (concept table, output root, model, plan, ...).
        concept_ids: Restrict the run to these concepts (a shard); default all of the table.
        finalize: Consolidate the manifest and write _SUCCESS at the end; a fan-out parent
            turns this off for its shards and finalizes once they are all done.

    Returns:
        The run summary: run_id, output_root, model, per-concept status, failed concept ids.
    """
    logger = get_run_logger()

    # 1. Check storage and model, start run.json; a complete run is a no-op
    run = prepare_run(config)
    summary = {**run, "concepts": {}, "failed": [], "finalized": False, "already_complete": run["complete"]}
    if run["complete"]:
        logger.info("run %s is already complete at %s: nothing to do", run["run_id"], run["output_root"])
        summary["finalized"] = True
        return summary

    # 2. Load and validate the concept table
    concepts = load_concepts(config, concept_ids)

    # 3. Per concept: invert -> plan -> generate (+ manifest part); one concept's failure
    #    does not stop the others
    chains = {}
    for concept in concepts:
        inverted = invert_references.submit(config, concept)
        planned = plan_seeds.submit(config, concept, inverted)
        chains[concept.concept_id] = (inverted, planned, generate_images.submit(config, concept, planned))

    for cid, futures in chains.items():
        futures[-1].wait()
        result, error = None, None
        for fut in futures:  # the first failed step holds the real error
            state = fut.state
            if state.is_failed() or state.is_crashed():
                error = _error_text(state)
                break
        if error is None and futures[-1].state.is_completed():
            result = futures[-1].result()
        if result is None:
            error = error or f"did not complete ({futures[-1].state.name})"
            summary["concepts"][cid] = {"status": "failed", "images": 0, "error": error}
            summary["failed"].append(cid)
            logger.error("concept %s failed: %s", cid, error)
        else:
            status = "skipped" if result.get("skipped") else "completed"
            summary["concepts"][cid] = {"status": status, **result, "error": None}

    # 4. Consolidate the manifest and write _SUCCESS, only when every concept is done
    if finalize and not summary["failed"]:
        summary["manifest_uri"] = finalize_run(config, [c.concept_id for c in concepts])
        summary["finalized"] = True

    # 5. Report
    publish_summary(summary)
    if summary["failed"]:
        # a Failed final state that still carries the summary (the CLI prints it)
        return Failed(message=f"{len(summary['failed'])} concept(s) failed: {summary['failed']}", data=summary)
    return summary


def _error_text(state) -> str:
    try:
        state.result()
    except BaseException as exc:  # the task's exception, re-raised by Prefect
        return f"{type(exc).__name__}: {exc}"
    return state.message or state.name


if __name__ == "__main__":
    generate_dataset()
