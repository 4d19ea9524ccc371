"""Tasks that open and close a run: output and model checks, the concept table, finalisation."""

from __future__ import annotations

from prefect import task

from normguide import run
from normguide.config import RunConfig
from normguide.data.schema import Concept


def _retry_can_help(task, task_run, state) -> bool:
    """Retry storage hiccups, not configuration errors: a missing bucket, rejected credentials,
    a bad scheme or a missing input (ValueError, FileNotFoundError) fail the same way again, and
    retrying them only delays the error."""
    try:
        state.result()
    except (ValueError, FileNotFoundError):
        return False
    except Exception:  # noqa: BLE001 - anything else may be transient
        return True
    return True


@task(name="prepare-run", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_can_help)
def prepare_run(config: RunConfig) -> dict:
    """Check storage and model before any GPU work; start run.json; say whether the run is complete."""
    return run.prepare_run(config)


@task(name="is-run-complete", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_can_help)
def is_run_complete(config: RunConfig) -> bool:
    """Whether the run already has _SUCCESS (a rerun is then a no-op)."""
    return run.run_complete(config)


@task(name="load-concepts", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_can_help)
def load_concepts(config: RunConfig, concept_ids: list[str] | None = None) -> list[Concept]:
    """Read and validate the concept table (a bad table fails without retries mattering)."""
    return run.load_concepts(config, concept_ids)


@task(name="finalize-run", retries=2, retry_delay_seconds=5, retry_condition_fn=_retry_can_help)
def finalize_run(config: RunConfig, concept_ids: list[str]) -> str:
    """Consolidate the manifest, finish run.json, write _SUCCESS last."""
    return run.finalize_run(config, concept_ids)
