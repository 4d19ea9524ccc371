"""Step 7 of a run: publish a finalized run: the export formats (``config.export``), the report
and the dataset card. Needs no model; a finished export is not rewritten.
"""

from __future__ import annotations

from normguide.data import layout
from normguide.pipeline.context import RunContext


def export(ctx: RunContext) -> dict[str, str]:
    """Write the configured export formats (``config.export``) of a finalized run
    (``normguide.export``); resumable, a finished export is not rewritten. Needs no model."""
    if not ctx.config.export:
        return {}
    from normguide.export import export_run

    return export_run(ctx.storage, ctx.config.export, shard_size=ctx.config.export_shard_size, run_id=ctx.run_id)


def export_and_report(ctx: RunContext, formats, *, shard_size: int | None = None) -> dict[str, str]:
    """Export a finalized run to ``formats`` (``normguide export``, any time after the run), then
    rewrite its report and dataset card so they name and load what now exists (the card's
    ``configs`` point at the hf files). Needs no model."""
    from normguide.export import export_run

    uris = export_run(ctx.storage, formats, run_id=ctx.run_id,
                      shard_size=ctx.config.export_shard_size if shard_size is None else shard_size)
    report(ctx)
    return uris


def report(ctx: RunContext, evaluation=None):
    """Write the contact sheets, seed-norm plots, ``report/index.md`` and the dataset card
    ``README.md`` of a finalized run (``normguide.reporting``). Needs no model."""
    from normguide.reporting import write_report

    return write_report(ctx.storage, storage_config=ctx.config.storage, evaluation=evaluation)


def wants_report(ctx: RunContext, already_complete: bool) -> bool:
    """A finalized run gets its report; a complete run seen again only when its card is missing
    or exports are configured (an export added later is written then; the card names it)."""
    return not already_complete or bool(ctx.config.export) or not ctx.storage.exists(layout.CARD)
