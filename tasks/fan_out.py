"""Tasks of the fan-out parent (flows/fan_out.py) that read the run's storage."""

from __future__ import annotations

from prefect import task

from normguide import run
from normguide.config import RunConfig


@task(name="find-missing-parts", retries=2, retry_delay_seconds=5)
def find_missing_parts(config: RunConfig, concept_ids: list[str]) -> list[str]:
    """Concept ids whose manifest part is not in storage yet (not done, failed, or never run)."""
    return run.missing_parts(config, concept_ids)
