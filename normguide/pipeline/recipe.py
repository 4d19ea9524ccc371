"""The recipe of one dataset run, written once.

Both drivers run :func:`run_recipe`: the local driver (``local.py``: each step a plain call in
this process) and the Prefect flow (``flows/generate_dataset.py``: each step a task, see
``tasks/runner.py``). What differs between them is only *how* a step runs, behind a
:class:`Runner`; what runs, in which order, and what a failure means is here, so both drivers
write the same bytes.

    1. prepare              output writable, same settings; a complete run is a no-op
    2. load_concepts        the concept table's rows (read once per run), reference images checked
    3. start (under the run's lease)   the model, run.json
    4. per concept          invert -> plan -> generate (+ manifest part), one concept's failure
                            isolated from the others
    5. finalize             manifest.parquet, run.json complete, _SUCCESS last
    6. evaluate             eval/ (a failure leaves the finished dataset as it is)
    7. publish              exports, report, dataset card (likewise)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

from normguide.data import layout
from normguide.data.schema import Concept
from normguide.data.storage import LeaseLost, Storage
from normguide.pipeline import refine as refine_stage
from normguide.pipeline import steps, throughput
from normguide.pipeline.context import RunContext
from normguide.pipeline.results import ConceptOutcome, PreparedRun, RunSummary
from normguide.progress import announce

log = logging.getLogger("normguide")


class Runner(Protocol):
    """How the recipe's steps run. Step names are the functions of :mod:`normguide.pipeline.steps`
    (each takes the run's context first; the runner supplies it)."""

    #: Where the recipe's own lines go (the flow run's logger under Prefect).
    log: logging.Logger | logging.LoggerAdapter
    #: The run's context in the driver's own process (the run's lease is taken on its storage).
    ctx: RunContext
    storage: Storage

    def step(self, name: str, *args: Any) -> Any:
        """Run step ``name`` with ``args`` and return its result; its exception propagates."""

    def concepts(self, concepts: list[Concept], outcomes: dict[str, ConceptOutcome]) -> None:
        """Run :func:`run_concept` for each concept, isolated (a failure is that concept's failed
        outcome), adding each outcome to ``outcomes`` as it is known."""

    def interrupted(self, error: str) -> None:
        """Mark run.json ``interrupted`` from this process (the run is on its way out: no task,
        never raises)."""


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


# -- one concept -------------------------------------------------------------------------------
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


# -- the run -----------------------------------------------------------------------------------
def check_run(runner: Runner, concept_ids: list[str] | None = None,
              ) -> tuple[PreparedRun, list[Concept] | None, dict[str, str]]:
    """Steps 1 and 2: the checks that need no model and write nothing. Returns the prepared run,
    the concepts to run (None when the run is already complete) and the concepts skipped for
    unusable reference images (id -> what is wrong).

    Raises ValueError (bad table, unwritable output, other settings than the run's; unusable
    references with ``strict_references``, or when no concept would be left) before any model
    loads."""
    # 1. Output writable, same settings; a complete run is a no-op
    prepared = runner.step("prepare")
    if prepared.complete:
        return prepared, None, {}
    # 2. The concept table's rows and their reference images (still no model, nothing written);
    #    bad references fail only their concepts
    concepts = runner.step("load_concepts", concept_ids)
    skipped = runner.step("check_references", concepts)
    return prepared, [c for c in concepts if c.concept_id not in skipped], skipped


def run_recipe(runner: Runner, concept_ids: list[str] | None = None, *, finalize: bool = True) -> RunSummary:
    """One dataset run (or one shard of it: ``concept_ids``, with ``finalize`` off), through
    ``runner``. Returns the run summary; see :func:`normguide.pipeline.run_dataset` for what
    raises and what is reported in the summary instead."""
    prepared, concepts, skipped = check_run(runner, concept_ids)
    head = dict(run_id=prepared.run_id, output_root=prepared.output_root, model=prepared.model,
                is_demo=prepared.is_demo, model_note=prepared.model_note)
    if concepts is None:
        runner.log.info("run %s is already complete at %s: nothing to do", prepared.run_id, prepared.output_root)
        summary = RunSummary(**head, finalized=True, already_complete=True,
                             manifest_uri=runner.storage.uri(layout.MANIFEST))
        return publish(runner, summary) if runner.step("wants_report", True) else summary

    announce(steps.outline(runner.ctx, concepts))

    # 3. The run's lease (its claim: every concept, or a shard's), held by the driver's process to
    #    the end: an overlapping live run is refused, naming the holder; a crashed one's expires
    lease = steps.acquire_lease(runner.ctx, [c.concept_id for c in concepts] if concept_ids is not None else None,
                                owner=f"run {prepared.run_id}")
    try:
        return _run_leased(runner, concepts, head, finalize=finalize, skipped=steps.skipped_outcomes(skipped),
                           shard=concept_ids or [c.concept_id for c in concepts])
    finally:
        lease.release_quietly()


def _run_leased(runner: Runner, concepts: list[Concept], head: dict, *, finalize: bool,
                skipped: dict[str, ConceptOutcome], shard: list[str]) -> RunSummary:
    """Steps 3 (the model, run.json) to 7 of :func:`run_recipe`, under the run's lease."""
    started = runner.step("start")
    head.update(model=started.model, is_demo=started.is_demo, model_note=started.model_note)

    # 4. Per concept: invert -> plan -> generate; a failure is recorded, the others go on
    outcomes: dict[str, ConceptOutcome] = {}
    try:
        runner.concepts(concepts, outcomes)
    except BaseException as exc:  # Ctrl-C, SIGTERM (as SystemExit), a cancelled flow: the run is resumable
        runner.interrupted(f"interrupted ({type(exc).__name__}) after {len(outcomes)} of {len(concepts)} concepts")
        raise
    outcomes = {**{c.concept_id: outcomes[c.concept_id] for c in concepts}, **skipped}
    if failed := [cid for cid, o in outcomes.items() if o.status == "failed"]:
        runner.log.error("%d of %d concept(s) failed: %s", len(failed), len(outcomes), ", ".join(failed[:20]))

    # The generation's throughput, MFU and cost (this invocation's images) into run.json; a shard
    # of a fan-out into its own record, which the fan-out parent sums (shards would overwrite
    # each other's run.json record)
    cost = throughput.run_cost(runner.ctx, outcomes.values())
    if cost is not None:
        runner.step("record_cost", cost, None if finalize else shard)

    # 5. Consolidate the manifest and write _SUCCESS, only when every concept is done
    summary = RunSummary(**head, concepts=outcomes, cost=cost)
    if summary.failed:
        runner.step("record_status", "failed", "; ".join(f"{cid}: {summary.concepts[cid].error}"
                                                         for cid in summary.failed))
    elif finalize:
        manifest_uri = runner.step("finalize", [c.concept_id for c in concepts])
        summary = summary.model_copy(update={"finalized": True, "manifest_uri": manifest_uri})

    # 6. Evaluate the images (a failure here leaves the finished dataset as it is)
    if summary.finalized and runner.step("wants_evaluation", [c.name for c in concepts]):
        evaluation, error = _attempt(runner, "evaluate")
        if error is None:
            summary = summary.model_copy(update={"evaluation": evaluation})
        else:
            runner.log.error("evaluation failed: %s", error)
            summary = summary.model_copy(update={"evaluation_error": error})

    # 7. Exports and the report (dataset card, contact sheets), for a finalized run
    return publish(runner, summary) if summary.finalized else summary


def publish(runner: Runner, summary: RunSummary) -> RunSummary:
    """Exports, then the report and dataset card (which names the exports); a failure here is
    recorded in the summary and leaves the finished dataset as it is."""
    exports, error = _attempt(runner, "export")
    if error is None:
        record, error = _attempt(runner, "report", summary.evaluation)
    if error is not None:
        runner.log.error("exports/report failed: %s", error)
        return summary.model_copy(update={"report_error": error})
    return summary.model_copy(update={"exports": exports, "card_uri": record.card_uri})


def _attempt(runner: Runner, name: str, *args: Any) -> tuple[Any, str | None]:
    """(the step's result, None), or (None, its error) for a step whose failure is reported."""
    try:
        return runner.step(name, *args), None
    except Exception as exc:  # noqa: BLE001 - reported in the summary; the dataset is complete
        return None, error_text(exc)


# -- the local runner --------------------------------------------------------------------------
#: Called after each concept: (index from 1, number of concepts, its outcome).
Progress = Callable[[int, int, ConceptOutcome], None]


class LocalRunner:
    """Every step a plain call in this process, on one run context."""

    def __init__(self, ctx: RunContext, *, progress: Progress | None = None,
                 logger: logging.Logger | logging.LoggerAdapter = log) -> None:
        self.ctx, self.storage, self.log, self._progress = ctx, ctx.storage, logger, progress

    def step(self, name: str, *args: Any) -> Any:
        return getattr(steps, name)(self.ctx, *args)

    def concepts(self, concepts: list[Concept], outcomes: dict[str, ConceptOutcome]) -> None:
        if self.ctx.config.generation.batch_across_concepts:  # generation batches across concepts
            from normguide.pipeline import crossbatch

            seen: list[str] = []

            def heard(outcome: ConceptOutcome) -> None:  # each outcome as it is known
                seen.append(outcome.concept_id)
                outcomes[outcome.concept_id] = outcome
                if self._progress is not None:
                    self._progress(len(seen), len(concepts), outcome)

            return crossbatch.run_concepts(self.ctx, concepts, self.log, heard)
        for n, concept in enumerate(concepts, 1):
            outcome = run_concept_isolated(self.ctx, concept, self.log)
            outcomes[concept.concept_id] = outcome
            if self._progress is not None:
                self._progress(n, len(concepts), outcome)

    def interrupted(self, error: str) -> None:
        steps.record_status(self.ctx, "interrupted", error=error)


__all__ = ["LocalRunner", "Progress", "Runner", "check_run", "error_text", "publish", "run_concept",
           "run_concept_isolated", "run_recipe"]
