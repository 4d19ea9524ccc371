"""The main job as a Prefect flow: a concept table in, a synthetic image dataset out.

The Prefect driver of ``normguide.pipeline``: the same steps as the local driver
(``normguide.pipeline.run_dataset``), each a task, so Prefect adds tracking, retries of IO steps,
concurrency limits on the GPU steps and the UI; both drivers write the same bytes.

Entry point for deployments: ``flows/generate_dataset.py:generate_dataset`` (from a checkout
with normguide installed) or ``normguide.flows.generate_dataset:generate_dataset``.
"""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.states import Failed

from normguide.config import RunConfig, secrets_refused
from normguide.pipeline import ConceptOutcome, RunSummary
from normguide.pipeline.local import error_text
from normguide.tasks.concepts import generate_images, invert_references, plan_seeds
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
) -> RunSummary:
    """Generate a synthetic image dataset from a concept table.

    Args:
        config: The run configuration (concept table, output root, model, plan, ...).
        concept_ids: Restrict the run to these concepts (a shard); default all of the table.
        finalize: Consolidate the manifest and write _SUCCESS at the end; a fan-out parent
            turns this off for its shards and finalizes once they are all done.

    Returns:
        The run summary (per-concept outcome, failed concepts, manifest URI).
    """
    # 1. No credential may be a parameter (the API stores them in clear); check the output and
    #    settings (no model); a complete run is a no-op
    if secret_fields := config.parameter_secrets():
        raise ValueError(secrets_refused(secret_fields, "flow-run parameters"))
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
    check_references(config, concepts)
    run = start_run(config)
    head.update(model=run.model, is_demo=run.is_demo, model_note=run.model_note)
    done = find_complete_concepts(config, [c.concept_id for c in concepts])

    # 3. Per concept: invert -> plan -> generate (+ manifest part); one concept's failure
    #    does not stop the others
    chains = {}
    for concept in concepts:
        if concept.concept_id in done:
            continue
        inverted = invert_references.submit(config, concept)
        planned = plan_seeds.submit(config, concept, wait_for=[inverted])
        chains[concept.concept_id] = (inverted, planned, generate_images.submit(config, concept, wait_for=[planned]))

    outcomes: dict[str, ConceptOutcome] = {}
    for concept in concepts:
        cid = concept.concept_id
        if cid in done:
            outcomes[cid] = ConceptOutcome.from_generated(done[cid])
            continue
        outcomes[cid] = _outcome(cid, chains[cid])
        if outcomes[cid].status == "failed":
            logger.error("concept %s failed: %s", cid, outcomes[cid].error)

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


def _outcome(concept_id: str, futures) -> ConceptOutcome:
    """The concept's outcome from its chain of task futures: the first failed step holds the error."""
    futures[-1].wait()
    for fut in futures:
        state = fut.state
        if state.is_failed() or state.is_crashed():
            try:
                state.result()
            except BaseException as exc:  # the task's exception, re-raised by Prefect
                return ConceptOutcome.failed(concept_id, error_text(exc))
            return ConceptOutcome.failed(concept_id, state.message or state.name)
    if futures[-1].state.is_completed():
        return ConceptOutcome.from_generated(futures[-1].result())
    return ConceptOutcome.failed(concept_id, f"did not complete ({futures[-1].state.name})")


if __name__ == "__main__":
    generate_dataset()
