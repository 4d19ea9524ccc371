"""The local driver: one run, sequentially, in this process, without Prefect.

    from normguide.config import RunConfig
    from normguide.pipeline import run_dataset
    summary = run_dataset(RunConfig(concepts="concepts.parquet", output="./outputs"))

It runs the recipe (``recipe.py``) that the Prefect flow runs, with each step a plain call, so
both write the same bytes. One concept's failure does not stop the others; the run is finalized
only when every concept is done.
"""

from __future__ import annotations

from normguide.config import RunConfig
from normguide.data.concept_table import TableSnapshot
from normguide.data.storage import Storage
from normguide.pipeline.context import ModelProvider, RunContext, read_table
from normguide.pipeline.recipe import (
    LocalRunner,
    Progress,
    error_text,
    publish,
    run_concept,
    run_concept_isolated,
    run_recipe,
)
from normguide.pipeline.results import RunSummary


def run_dataset(
    config: RunConfig,
    *,
    concept_ids: list[str] | None = None,
    finalize: bool = True,
    table: TableSnapshot | None = None,
    storage: Storage | None = None,
    model=None,
    progress: Progress | None = None,
) -> RunSummary:
    """Run a whole dataset in this process.

    Args:
        config: The run configuration.
        concept_ids: Restrict the run to these concepts (a shard); default the whole table.
        finalize: Consolidate the manifest and write ``_SUCCESS`` at the end.
        table: The concept table, already read (``TableSnapshot.read``); default: read it once now.
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
    if table is None:
        table = read_table(config)
    ctx = RunContext.create(config, table=table, storage=storage, model=model)
    return run_recipe(LocalRunner(ctx, progress=progress), concept_ids, finalize=finalize)


__all__ = ["ModelProvider", "Progress", "error_text", "publish", "run_concept", "run_concept_isolated",
           "run_dataset"]
