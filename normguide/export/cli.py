"""``normguide export``: export an existing, finished run (local or s3://) to hf and/or WebDataset.

Registered on the main app by ``normguide.cli`` (``app.command("export")(export_command)``).
"""

from __future__ import annotations

import json
from typing import Optional

import typer

from normguide.config import EXPORT_FORMATS
from normguide.data import layout


def export_command(
    run_uri: str = typer.Argument(..., help="A run's root: <output>/<run_id> (local dir or s3:// URI)."),
    format: list[str] = typer.Option(
        list(EXPORT_FORMATS), "--format", "-f", help=f"Export format, repeatable: {', '.join(EXPORT_FORMATS)}. Default: all."
    ),
    shard_size: Optional[int] = typer.Option(
        None, help="Samples per WebDataset tar / hf Parquet file (default: the run's export_shard_size, 1000)."
    ),
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint URL for s3:// runs."),
) -> None:
    """Export a finished run for training jobs: hf (datasets Parquet) and webdataset (tar shards).

    Prints one line per format: its folder and a line of Python that loads it. The run's dataset
    card (README.md) and report are rewritten to name and load the exports. Rerunning it
    finishes an interrupted export and is a no-op for a finished one.
    """
    from normguide.cli import existing_run
    from normguide.data.storage import StorageError
    from normguide.export import load_snippet
    from normguide.pipeline import RunContext, steps

    try:
        cfg, store = existing_run(run_uri, endpoint_url)
        uris = steps.export_and_report(RunContext.create(cfg, storage=store), format, shard_size=shard_size)
        shards = json.loads(store.read_bytes(layout.export_success_key(layout.WEBDATASET_DIR)))["shards"] if "webdataset" in uris else 1
    except (ValueError, FileNotFoundError, StorageError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for fmt, uri in uris.items():
        typer.echo(f"{fmt}: {uri}    {load_snippet(fmt, uri, endpoint_url=endpoint_url, num_shards=shards)}")
