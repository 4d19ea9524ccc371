"""The run context of a task: built on the worker from the flow's config."""

from __future__ import annotations

from normguide import errors
from normguide.config import RunConfig
from normguide.data.concept_table import TableSnapshot
from normguide.pipeline import RunContext


def resolved_config(config: RunConfig) -> RunConfig:
    """``config`` with a prefect-aws credentials block it names resolved here, in this process,
    so its secrets never travel as a parameter or result (keep the copy inside the task)."""
    if config.storage.aws_credentials_block:
        from normguide.tasks.credentials import resolve_storage_config

        config = config.model_copy(update={"storage": resolve_storage_config(config.storage)})
    return config


def run_context(config: RunConfig, table: TableSnapshot | None = None) -> RunContext:
    """A context for ``config`` and the run's concept table (``table``: the flow's snapshot, so
    a task never reads the table again); a prefect-aws credentials block named in the config is
    resolved here (:func:`resolved_config`)."""
    return RunContext.create(resolved_config(config), table=table)


def retry_can_help(task, task_run, state) -> bool:
    """Prefect's retry condition for the IO tasks: :func:`normguide.errors.retry_can_help` on
    the task's exception (bad input is never retried; storage hiccups are)."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - the error family decides
        return errors.retry_can_help(exc)
    return True
