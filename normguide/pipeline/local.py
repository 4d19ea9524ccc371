"""The local driver: one run, sequentially, in this process, without Prefect.

    from normguide.config import RunConfig
    from normguide.pipeline import run_dataset
    summary = run_dataset(RunConfig(concepts="concepts.parquet", output="./outputs"))

It calls the same steps as the Prefect driver (``flows/``) in the same order, so both write the
same bytes. One concept's failure does not stop the others; the run is finalized only when
every concept is done.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from normguide.config import RunConfig
from normguide.data import layout
from normguide.data.schema import Concept
from normguide.data.storage import LeaseLost, Storage
from normguide.pipeline import refine as refine_stage
from normguide.pipeline import steps
from normguide.pipeline.context import ModelProvider, RunContext
from normguide.pipeline.results import ConceptOutcome, RunSummary
from normguide.progress import announce

log = logging.getLogger("normguide")

#: Called after each concept: (index from 1, number of concepts, its outcome).
Progress = Callable[[int, int, ConceptOutcome], None]


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_concept(ctx: RunContext, concept: Concept) -> ConceptOutcome:
    """Invert, plan, refine (when on) and generate one concept (nothing of a complete concept is read again)."""
    done = steps.completed_concept(ctx, concept)
    if done is None:
        seeds = steps.invert(ctx, concept)
        seeds = steps.plan(ctx, concept, seeds)
        seeds = refine_stage.refine(ctx, concept, seeds)  # a no-op unless refine.enabled
        done = steps.generate(ctx, concept, seeds)
    return ConceptOutcome.from_generated(done)


def run_concept_isolated(ctx: RunContext, concept: Concept, logger: logging.Logger | logging.LoggerAdapter = log,
                         ) -> ConceptOutcome:
    """:func:`run_concept`, with a failure turned into the concept's failed outcome (logged):
    one concept's failure never stops the others, in either driver."""
    try:
        return run_concept(ctx, concept)
    except LeaseLost:  # not this concept's failure: the whole run must stop writing
        raise
    except Exception as exc:  # noqa: BLE001 - isolated per concept, reported in the summary
        logger.error("concept %s failed: %s", concept.concept_id, error_text(exc))
        return ConceptOutcome.failed(concept.concept_id, error_text(exc))


def run_dataset(
    config: RunConfig,
    *,
    concept_ids: list[str] | None = None,
    finalize: bool = True,
    storage: Storage | None = None,
    model=None,
    progress: Progress | None = None,
) -> RunSummary:
    """Run a whole dataset in this process.

    Args:
        config: The run configuration.
        concept_ids: Restrict the run to these concepts (a shard); default the whole table.
        finalize: Consolidate the manifest and write ``_SUCCESS`` at the end.
        storage: An output store to use instead of ``<config.output>/<run_id>``.
        model: A loaded model (or a callable returning one) instead of ``config.model``.
        progress: Called after each concept.

    Returns:
        The run summary; ``summary.failed`` lists the concepts that failed, with their errors in
        ``summary.concepts``; run.json then says ``failed``. Configuration errors (bad table,
        missing or broken reference images, unwritable output, unknown model) raise
        ``ValueError`` before the model loads or anything is written; so does another live run
        of the same output (``LeaseHeld``, naming its holder). An interrupt
        (KeyboardInterrupt) marks run.json ``interrupted`` and propagates; a rerun resumes.
    """
    ctx = RunContext.create(config.pinned(), storage=storage, model=model)

    # 1. Checks that need no model: output writable, same settings; a complete run is a no-op
    prepared = steps.prepare(ctx)
    head = dict(run_id=prepared.run_id, output_root=prepared.output_root, model=prepared.model,
                is_demo=prepared.is_demo, model_note=prepared.model_note)
    if prepared.complete:
        log.info("run %s is already complete at %s: nothing to do", prepared.run_id, prepared.output_root)
        summary = RunSummary(**head, finalized=True, already_complete=True,
                             manifest_uri=ctx.storage.uri(layout.MANIFEST))
        return publish(ctx, summary) if steps.wants_report(ctx, already_complete=True) else summary

    # 2. The concept table and its reference images (still no model, nothing written)
    concepts = steps.load_concepts(ctx, concept_ids)
    skipped = steps.check_references(ctx, concepts)  # bad references fail only their concepts
    concepts = [c for c in concepts if c.concept_id not in skipped]
    announce(steps.outline(ctx, concepts))

    # 3. The run's lease (a second run of the same output waits for nothing: it is refused with
    #    the holder named), then the model and run.json
    lease = steps.acquire_lease(ctx, [c.concept_id for c in concepts] if concept_ids is not None else None,
                                owner=f"run {ctx.run_id}")
    try:
        return _run_leased(ctx, concepts, head, finalize=finalize, progress=progress,
                           skipped=steps.skipped_outcomes(skipped))
    finally:
        lease.release_quietly()


def _run_leased(ctx: RunContext, concepts: list[Concept], head: dict, *, finalize: bool,
                progress: Progress | None, skipped: dict[str, ConceptOutcome] | None = None) -> RunSummary:
    prepared = steps.start(ctx)
    head.update(model=prepared.model, is_demo=prepared.is_demo, model_note=prepared.model_note)

    # 4. Per concept: invert -> plan -> generate; a failure is recorded, the others go on
    outcomes: dict[str, ConceptOutcome] = {}
    try:
        for n, concept in enumerate(concepts, 1):
            outcome = run_concept_isolated(ctx, concept)
            outcomes[concept.concept_id] = outcome
            if progress is not None:
                progress(n, len(concepts), outcome)
    except BaseException as exc:  # Ctrl-C, SIGTERM (as SystemExit): the run is resumable
        steps.record_status(ctx, "interrupted", error=f"interrupted ({type(exc).__name__}) after "
                            f"{len(outcomes)} of {len(concepts)} concepts")
        raise

    # 5. Consolidate the manifest and write _SUCCESS, only when every concept is done
    summary = RunSummary(**head, concepts={**outcomes, **(skipped or {})})
    if summary.failed:
        steps.record_status(ctx, "failed", error="; ".join(
            f"{cid}: {summary.concepts[cid].error}" for cid in summary.failed))
    elif finalize:
        manifest_uri = steps.finalize(ctx, [c.concept_id for c in concepts])
        summary = summary.model_copy(update={"finalized": True, "manifest_uri": manifest_uri})

    # 6. Evaluate the images (a failure here leaves the finished dataset as it is)
    if summary.finalized and steps.wants_evaluation(ctx, [c.name for c in concepts]):
        try:
            summary = summary.model_copy(update={"evaluation": steps.evaluate(ctx)})
        except Exception as exc:  # noqa: BLE001 - reported in the summary; the dataset is complete
            log.error("evaluation failed: %s", error_text(exc))
            summary = summary.model_copy(update={"evaluation_error": error_text(exc)})

    # 7. Exports and the report (dataset card, contact sheets), for a finalized run
    return publish(ctx, summary) if summary.finalized else summary


def publish(ctx: RunContext, summary: RunSummary) -> RunSummary:
    """Exports, then the report and dataset card (which names the exports); a failure here is
    recorded in the summary and leaves the finished dataset as it is."""
    try:
        exports = steps.export(ctx)
        record = steps.report(ctx, evaluation=summary.evaluation)
    except Exception as exc:  # noqa: BLE001 - reported in the summary; the dataset is complete
        log.error("exports/report failed: %s", error_text(exc))
        return summary.model_copy(update={"report_error": error_text(exc)})
    return summary.model_copy(update={"exports": exports, "card_uri": record.card_uri})


__all__ = ["ModelProvider", "Progress", "publish", "run_concept", "run_concept_isolated", "run_dataset"]
