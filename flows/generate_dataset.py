"""The main job as a Prefect flow: a concept table in, a synthetic image dataset out.

The Prefect driver of ``normguide.pipeline``: the recipe the local driver runs
(``normguide.pipeline.recipe``), with each step a task (``tasks/runner.py``): one per setup or
closing step, and one per batch of concepts (``tasks/concepts.py``), so Prefect adds tracking,
retries of IO steps, a concurrency limit on the GPU work and the UI, with a number of task runs
that stays bounded however large the table (``concepts_per_task``); both drivers write the
same bytes.

Entry point for deployments: ``flows/generate_dataset.py:generate_dataset`` (from a checkout
with normguide installed) or ``normguide.flows.generate_dataset:generate_dataset``.
"""

# No ``from __future__ import annotations``: Prefect builds the flow's parameter model from its
# annotations, and a served flow run (``flow.serve``, ``register serve``) gets the flow pickled
# by value, which keeps only the globals the code uses: string annotations naming RunConfig
# would no longer resolve there ("Generate_DatasetModel is not fully defined").
from prefect import flow
from prefect.states import Failed

from normguide.config import RunConfig
from normguide.masking import secrets_refused
from normguide.pipeline import RunSummary
from normguide.pipeline.recipe import run_recipe
from normguide.tasks.reporting import publish_summary
from normguide.tasks.runner import MAX_CONCEPT_TASKS, PrefectRunner


def _mark_interrupted(flow, flow_run, state) -> None:
    """on_cancellation / on_crashed: run.json says ``interrupted`` (a rerun resumes)."""
    from normguide.pipeline import RunContext, steps

    try:
        config = RunConfig.model_validate(flow_run.parameters.get("config") or {})
    except Exception:  # noqa: BLE001 - nothing to mark without a readable config
        return
    steps.record_status(RunContext.create(config), "interrupted",
                        error=f"flow run {flow_run.name} {state.name.lower()}: {state.message or ''}".strip())


@flow(name="generate-dataset", log_prints=True, validate_parameters=True,
      on_cancellation=[_mark_interrupted], on_crashed=[_mark_interrupted])
def generate_dataset(
    config: RunConfig = RunConfig(),
    concept_ids: list[str] | None = None,
    finalize: bool = True,
    concepts_per_task: int | None = None,
) -> RunSummary:
    """Generate a synthetic image dataset from a concept table.

    Args:
        config: The run configuration (concept table, output root, model, plan, ...).
        concept_ids: Restrict the run to these concepts (a shard); default all of the table.
        finalize: Consolidate the manifest and write _SUCCESS at the end; a fan-out parent
            turns this off for its shards and finalizes once they are all done.
        concepts_per_task: Concepts per task run (each task inverts, plans and generates its
            concepts in turn); default ``ceil(N / 64)`` for the ``N`` concepts still to do, so
            up to 64 concepts get a task run each and no flow run has more than 64 of them.

    Returns:
        The run summary (per-concept outcome, failed concepts, manifest URI).
    """
    # 1. Check inputs: no credential may be a parameter (the API stores them in clear)
    if secret_fields := config.parameter_secrets():
        raise ValueError(secrets_refused(secret_fields, "flow-run parameters"))
    if concepts_per_task is not None and concepts_per_task < 1:
        raise ValueError(f"concepts_per_task must be >= 1 (or None for ceil(N / {MAX_CONCEPT_TASKS})), "
                         f"got {concepts_per_task}")

    # 2. The recipe, each step a task (the concept table is read once, here)
    summary = run_recipe(PrefectRunner(config, concepts_per_task=concepts_per_task), concept_ids, finalize=finalize)
    if summary.already_complete:
        return summary

    # 3. The summary as an artifact; a Failed final state that still carries it (the CLI prints it)
    publish_summary(summary)
    if summary.report_error:
        return Failed(message=f"exports/report failed: {summary.report_error}", data=summary)
    if summary.evaluation_error:
        return Failed(message=f"evaluation failed: {summary.evaluation_error}", data=summary)
    if summary.failed:
        return Failed(message=f"{len(summary.failed)} concept(s) failed: {summary.failed}", data=summary)
    return summary


if __name__ == "__main__":
    generate_dataset()
