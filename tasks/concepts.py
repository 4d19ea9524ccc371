"""Per-concept tasks: invert the references, plan the seeds, generate the images.

They pass the seeds between them through the concept's seeds file in storage (a retried or
resumed task finds it there) and return small records; GPU steps carry the ``gpu`` tag, the
tag a concurrency limit keeps to one task per device.
"""

from __future__ import annotations

from prefect import task

from normguide.config import RunConfig
from normguide.data.schema import Concept
from normguide.pipeline import GeneratedConcept, RunContext, SeedsRecord, steps
from normguide.tasks.context import run_context


def _seeds(ctx: RunContext, concept: Concept, what: str):
    seeds = steps.read_seeds(ctx, concept.concept_id)
    if seeds is None:
        raise RuntimeError(f"concept {concept.concept_id!r}: no seeds file in {ctx.storage.root}; {what}")
    return seeds


@task(name="invert-references", tags=["gpu"], task_run_name="invert-{concept.concept_id}")
def invert_references(config: RunConfig, concept: Concept) -> SeedsRecord:
    """DDIM-invert the concept's reference images to seeds (seeds/<id>.safetensors)."""
    ctx = run_context(config)
    return steps.seeds_record(ctx, steps.invert(ctx, concept))


@task(name="plan-seeds", task_run_name="plan-{concept.concept_id}")
def plan_seeds(config: RunConfig, concept: Concept) -> SeedsRecord:
    """Plan centroids and interpolants for every configured method (added to the seeds file)."""
    ctx = run_context(config)
    return steps.seeds_record(ctx, steps.plan(ctx, concept, _seeds(ctx, concept, "run the inversion first")))


@task(name="generate-images", tags=["gpu"], task_run_name="generate-{concept.concept_id}")
def generate_images(config: RunConfig, concept: Concept) -> GeneratedConcept:
    """Generate the missing images, then write the concept's manifest part."""
    ctx = run_context(config)
    return steps.generate(ctx, concept, _seeds(ctx, concept, "run plan-seeds first"))
