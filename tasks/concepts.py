"""Per-concept tasks: invert the references, plan the seeds, generate the images."""

from __future__ import annotations

from prefect import task

from normguide import run
from normguide.config import RunConfig
from normguide.data.schema import Concept


def _concept_run_name(prefix: str):
    return prefix + "-{concept.concept_id}"


@task(name="invert-references", tags=["gpu"], task_run_name=_concept_run_name("invert"))
def invert_references(config: RunConfig, concept: Concept) -> dict:
    """DDIM-invert the concept's reference images to seeds (seeds/<id>.safetensors)."""
    return run.invert_references(config, concept)


@task(name="plan-seeds", task_run_name=_concept_run_name("plan"))
def plan_seeds(config: RunConfig, concept: Concept, inverted: dict) -> dict:
    """Plan centroids and interpolants for every configured method (added to the seeds file)."""
    return run.plan_concept(config, concept)


@task(name="generate-images", tags=["gpu"], task_run_name=_concept_run_name("generate"))
def generate_images(config: RunConfig, concept: Concept, plan: dict) -> dict:
    """Generate the missing images, then write the concept's manifest part."""
    return run.generate_concept(config, concept)
