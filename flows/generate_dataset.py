"""The main job as a Prefect flow: a concept table in, a synthetic image dataset out.

The Prefect driver of ``normguide.pipeline``: the same steps as the local driver
(``normguide.pipeline.run_dataset``) as tasks: one per setup or closing step, and one per batch
of concepts (``tasks/concepts.py``, the local driver's ``run_concept`` for each), so Prefect adds
tracking, retries of IO steps, a concurrency limit on the GPU work and the UI, with a number of
task runs that stays bounded however large the table (``concepts_per_task``); both drivers
write the same bytes.

Entry point for deployments: ``flows/generate_dataset.py:generate_dataset`` (from a checkout
with normguide installed) or ``normguide.flows.generate_dataset:generate_dataset``.
"""

# No ``from __future__ import annotations``: Prefect builds the flow's parameter model from its
# annotations, and a served flow run (``flow.serve``, ``register serve``) gets the flow pickled
# by value, which keeps only the globals the code uses: string annotations naming RunConfig
# would no longer resolve there ("Generate_DatasetModel is not fully defined").
import math

from prefect import flow, get_run_logger
from prefect.states import Failed

from normguide.config import RunConfig, secrets_refused
from normguide.pipeline import ConceptOutcome, RunSummary, steps
from normguide.pipeline.local import error_text
from normguide.tasks.concepts import generate_concepts
from normguide.tasks.reporting import publish_report, publish_summary
from normguide.tasks.run_setup import (
    check_references,
    evaluate_run,
    export_run,
    finalize_run,
    find_complete_concepts,
    load_concepts,
    prepare_run,
    record_run_status,
    start_run,
    wants_evaluation,
    write_report,
)

#: With no ``concepts_per_task``, concepts are batched so that one flow run creates at most this
#: many concept task runs: a table of up to 64 concepts still gets one task run per concept in
#: the UI, a larger one ``ceil(N / 64)`` concepts per task (benchmarks/orchestration.py).
MAX_CONCEPT_TASKS = 64


def _mark_interrupted(flow, flow_run, state) -> None:
    """on_cancellation / on_crashed: run.json says ``interrupted`` (a rerun resumes)."""
    from normguide.pipeline import RunContext, steps

    try:
        config = RunConfig.model_validate(flow_run.parameters.get("config") or {})
    except Exception:  # noqa: BLE001 - nothing to mark without a readable config
        return
    steps.record_status(RunContext.create(config.pinned()), "interrupted",
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
    # 1. No credential may be a parameter (the API stores them in clear); check the output and
    #    settings (no model); a complete run is a no-op
    if secret_fields := config.parameter_secrets():
        raise ValueError(secrets_refused(secret_fields, "flow-run parameters"))
    if concepts_per_task is not None and concepts_per_task < 1:
        raise ValueError(f"concepts_per_task must be >= 1 (or None for ceil(N / {MAX_CONCEPT_TASKS})), "
                         f"got {concepts_per_task}")
    config = config.pinned()
    logger = get_run_logger()
    run = prepare_run(config)
    head = dict(run_id=run.run_id, output_root=run.output_root, model=run.model, is_demo=run.is_demo,
                model_note=run.model_note)
    if run.complete:
        logger.info("run %s is already complete at %s: nothing to do", run.run_id, run.output_root)
        summary = RunSummary(**head, finalized=True, already_complete=True)
        return _publish(config, summary) if wants_report(config, True) else summary

    # 2. Load and validate the concept table and its references; then the model, and run.json
    concepts = load_concepts(config, concept_ids)
    bad = check_references(config, concepts)  # bad references fail only their concepts
    concepts = [c for c in concepts if c.concept_id not in bad]
    # the run's lease (one per shard for a shard), held by this flow run's process to the end: a
    # second run of the same dataset is refused, naming the holder; a crashed one's expires
    lease = _run_storage(config).acquire_lease(owner=f"run {config.run_id}", concepts=concept_ids)
    try:
        return _leased(config, concepts, head, concepts_per_task=concepts_per_task, finalize=finalize, skipped=bad)
    finally:
        lease.release_quietly()


def _run_storage(config: RunConfig):
    from normguide.pipeline import RunContext

    return RunContext.create(config).storage


def _leased(config: RunConfig, concepts, head: dict, *, concepts_per_task: int | None, finalize: bool,
            skipped: dict | None = None):
    """Steps 2 (the model, run.json) to 6 of :func:`generate_dataset`, under the run's lease."""
    logger = get_run_logger()
    run = start_run(config)
    head.update(model=run.model, is_demo=run.is_demo, model_note=run.model_note)
    done = find_complete_concepts(config, concepts)

    # 3. Per batch of concepts, one task after the other (one device per flow run; more devices
    #    are more flow runs, see flows/fan_out.py): invert -> plan -> generate (+ manifest part)
    #    for each concept; one concept's failure does not stop the others
    todo = [c for c in concepts if c.concept_id not in done]
    per_task = concepts_per_task or max(1, math.ceil(len(todo) / MAX_CONCEPT_TASKS))
    ran: dict[str, ConceptOutcome] = {}
    for start in range(0, len(todo), per_task):
        batch = todo[start:start + per_task]
        ran.update(_batch_outcomes(batch, generate_concepts(config, batch, return_state=True)))
    outcomes = {c.concept_id: ConceptOutcome.from_generated(done[c.concept_id]) if c.concept_id in done
                else ran[c.concept_id] for c in concepts}
    outcomes.update(steps.skipped_outcomes(skipped or {}))
    if failed := [cid for cid, o in outcomes.items() if o.status == "failed"]:
        logger.error("%d of %d concept(s) failed: %s", len(failed), len(outcomes), ", ".join(failed[:20]))

    # 4. Consolidate the manifest and write _SUCCESS, only when every concept is done
    summary = RunSummary(**head, concepts=outcomes)
    if summary.failed:
        record_run_status(config, "failed", "; ".join(f"{cid}: {outcomes[cid].error}" for cid in summary.failed))
    elif finalize:
        summary = summary.model_copy(update={"finalized": True,
                                             "manifest_uri": finalize_run(config, [c.concept_id for c in concepts])})

    # 5. Evaluate the images (a failure here leaves the finished dataset as it is)
    if summary.finalized and wants_evaluation(config, [c.name for c in concepts]):
        state = evaluate_run(config, return_state=True)
        if state.is_completed():
            summary = summary.model_copy(update={"evaluation": state.result()})
        else:
            try:
                state.result()
            except Exception as exc:  # noqa: BLE001 - the task's error, reported in the summary
                summary = summary.model_copy(update={"evaluation_error": error_text(exc)})
            logger.error("evaluation failed: %s", summary.evaluation_error)

    # 6. Exports, the report and dataset card; the summary as an artifact
    if summary.finalized:
        summary = _publish(config, summary)
    publish_summary(summary)
    if summary.report_error:
        return Failed(message=f"exports/report failed: {summary.report_error}", data=summary)
    if summary.evaluation_error:
        return Failed(message=f"evaluation failed: {summary.evaluation_error}", data=summary)
    if summary.failed:
        # a Failed final state that still carries the summary (the CLI prints it)
        return Failed(message=f"{len(summary.failed)} concept(s) failed: {summary.failed}", data=summary)
    return summary


def _publish(config: RunConfig, summary: RunSummary) -> RunSummary:
    """Exports, then the report (published as an artifact); a failure is recorded in the summary."""
    try:
        exports = export_run(config)
        record = write_report(config, summary.evaluation)
        publish_report(record)
    except Exception as exc:  # noqa: BLE001 - the task's error, reported in the summary
        get_run_logger().error("exports/report failed: %s", error_text(exc))
        return summary.model_copy(update={"report_error": error_text(exc)})
    return summary.model_copy(update={"exports": exports, "card_uri": record.card_uri})


def wants_report(config: RunConfig, already_complete: bool) -> bool:
    from normguide.pipeline import RunContext, steps

    return steps.wants_report(RunContext.create(config), already_complete)


def _batch_outcomes(batch, state) -> dict[str, ConceptOutcome]:
    """Each concept's outcome from its batch task's final state: the task's own list, or, when
    the task itself failed (after its retries), the task's error for every concept of it."""
    if state.is_completed():
        return {o.concept_id: o for o in state.result()}
    try:
        state.result()
    except BaseException as exc:  # noqa: BLE001 - the task's exception, re-raised by Prefect
        error = error_text(exc)
    else:
        error = state.message or state.name
    return {c.concept_id: ConceptOutcome.failed(c.concept_id, error) for c in batch}


if __name__ == "__main__":
    generate_dataset()
