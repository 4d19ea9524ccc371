"""The Prefect runner of the recipe (``normguide.pipeline.recipe``): each step a task.

The flow (``flows/generate_dataset.py``) builds one :class:`PrefectRunner` and hands it to
``run_recipe``. The runner reads the concept table once, in the flow's process, and gives every
task the pinned config (credentials stay references, resolved in each task's process) and that
snapshot; it holds the run's lease in the flow's process; and it runs the concepts as batches of
``concepts_per_task`` concepts, one ``generate-concepts`` task (GPU tag) per batch, after one
task that finds the concepts already complete.
"""

from __future__ import annotations

import math
from typing import Any

from prefect import get_run_logger

from normguide.config import RunConfig
from normguide.data.schema import Concept
from normguide.pipeline import ConceptOutcome, steps
from normguide.pipeline.recipe import error_text
from normguide.tasks import run_setup
from normguide.tasks.concepts import generate_concepts
from normguide.tasks.context import run_context
from normguide.tasks.reporting import publish_report

#: With no ``concepts_per_task``, concepts are batched so that one flow run creates at most this
#: many concept task runs: a table of up to 64 concepts still gets one task run per concept in
#: the UI, a larger one ``ceil(N / 64)`` concepts per task (benchmarks/orchestration.py).
MAX_CONCEPT_TASKS = 64

#: The recipe's steps that run as tasks; any other step (``wants_report``: one existence check)
#: runs in the flow's process.
TASKS = {
    "prepare": run_setup.prepare_run,
    "load_concepts": run_setup.load_concepts,
    "check_references": run_setup.check_references,
    "start": run_setup.start_run,
    "record_status": run_setup.record_run_status,
    "finalize": run_setup.finalize_run,
    "wants_evaluation": run_setup.wants_evaluation,
    "evaluate": run_setup.evaluate_run,
    "export": run_setup.export_run,
    "report": run_setup.write_report,
}


class PrefectRunner:
    """Runs the recipe's steps as Prefect tasks of the current flow run."""

    def __init__(self, config: RunConfig, *, concepts_per_task: int | None = None) -> None:
        # the flow process's own context: the table read once (credentials resolved here), the
        # lease's storage, and the few steps that are not tasks
        self.ctx = run_context(config)
        self.table = self.ctx.table
        self.config = config.pinned(self.table.digest)  # what tasks get: credentials as references only
        self.storage = self.ctx.storage
        self.log = get_run_logger()
        self.concepts_per_task = concepts_per_task

    def step(self, name: str, *args: Any) -> Any:
        task = TASKS.get(name)
        if task is None:
            return getattr(steps, name)(self.ctx, *args)
        result = task(self.config, self.table, *args)
        if name == "report":  # the report as the flow run's artifact too
            publish_report(result)
        return result

    def concepts(self, concepts: list[Concept], outcomes: dict[str, ConceptOutcome]) -> None:
        done = run_setup.find_complete_concepts(self.config, self.table, concepts)
        outcomes.update({cid: ConceptOutcome.from_generated(g) for cid, g in done.items()})
        # one batch task after the other (one device per flow run; more devices are more flow
        # runs, see flows/fan_out.py)
        todo = [c for c in concepts if c.concept_id not in done]
        per_task = self.concepts_per_task or max(1, math.ceil(len(todo) / MAX_CONCEPT_TASKS))
        if self.config.generation.batch_across_concepts:  # whole groups per task: the local driver's batches
            from normguide.pipeline.crossbatch import task_batches

            batches = task_batches(todo, self.config, per_task)
        else:
            batches = [todo[start:start + per_task] for start in range(0, len(todo), per_task)]
        for batch in batches:
            outcomes.update(_batch_outcomes(batch, generate_concepts(self.config, batch, return_state=True)))

    def interrupted(self, error: str) -> None:
        steps.record_status(self.ctx, "interrupted", error=error)


def _batch_outcomes(batch: list[Concept], state) -> dict[str, ConceptOutcome]:
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
