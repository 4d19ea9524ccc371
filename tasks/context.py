"""The run context of a task: built on the worker from the flow's config."""

from __future__ import annotations

from normguide.config import RunConfig
from normguide.data.concept_table import TableSnapshot
from normguide.pipeline import RunContext


def run_context(config: RunConfig, table: TableSnapshot | None = None) -> RunContext:
    """A context for ``config`` and the run's concept table (``table``: the flow's snapshot, so
    a task never reads the table again); a prefect-aws credentials block named in the config is
    resolved here, in this process, so its secrets never travel as a parameter or result."""
    if config.storage.aws_credentials_block:
        from normguide.tasks.credentials import resolve_storage_config

        config = config.model_copy(update={"storage": resolve_storage_config(config.storage)})
    return RunContext.create(config, table=table)


def retry_can_help(task, task_run, state) -> bool:
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
