"""The per-concept work as one task per batch of concepts: invert, plan, generate (+ manifest part).

A batch task calls the recipe's :func:`~normguide.pipeline.recipe.run_concept_isolated` for each of its
concepts in turn, so both drivers run the same code and write the same bytes. Why batches and
not one task per step and concept: a Prefect task run costs API calls, a row in the server's
database and state in the flow process, and the steps pass their data through storage anyway
(a resumed concept finds its files there, see ``run_concept``). With ``K`` concepts per task a
flow run of ``N`` concepts creates ``ceil(N / K)`` task runs instead of ``3 N`` (see
``flows/generate_dataset.py`` for how ``K`` is chosen).

Failure isolation is per concept, as in the local driver: a concept that raises is reported as
that concept's failed outcome and the batch goes on. The task itself fails only when it cannot
start (its run context: a credentials block that cannot be read); those IO failures retry.
"""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NONE

from normguide.config import RunConfig
from normguide.data.schema import Concept
from normguide.pipeline import ConceptOutcome
from normguide.pipeline.recipe import run_concept_isolated
from normguide.tasks.context import retry_can_help, run_context


def concept_batch_name() -> str:
    """``generate-alpha`` for one concept, ``generate-c00016..c00031`` for a batch (the UI's row)."""
    from prefect.runtime import task_run

    ids = [c.concept_id if isinstance(c, Concept) else c["concept_id"] for c in task_run.parameters["concepts"]]
    if not ids:
        return "generate-nothing"
    return f"generate-{ids[0]}" if len(ids) == 1 else f"generate-{ids[0]}..{ids[-1]}"


# cache_policy NONE: whether a concept is done is read from storage (its manifest part and
# images), never from Prefect's cache; it also spares hashing the config and concepts per call.
@task(name="generate-concepts", tags=["gpu"], task_run_name=concept_batch_name, cache_policy=NONE,
      retries=2, retry_delay_seconds=5, retry_condition_fn=retry_can_help)
def generate_concepts(config: RunConfig, concepts: list[Concept]) -> list[ConceptOutcome]:
    """Invert the references, plan the seeds and generate the images of each concept in turn;
    one outcome per concept, in order (a failed concept's outcome holds its error)."""
    logger = get_run_logger()
    ctx = run_context(config)
    outcomes = []
    if config.generation.batch_across_concepts:  # generation batches across this task's concepts
        from normguide.pipeline.crossbatch import run_concepts

        heard: dict[str, ConceptOutcome] = {}
        run_concepts(ctx, concepts, logger, lambda o: heard.__setitem__(o.concept_id, o))
        return [heard[c.concept_id] for c in concepts]
    for concept in concepts:
        outcomes.append(run_concept_isolated(ctx, concept, logger))
    return outcomes
