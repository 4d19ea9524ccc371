"""Commands on an existing run: ``evaluate``, ``export``, ``show`` and ``verify``. Each opens the
run at its root (local or s3://) with :func:`existing_run` or ``reporting.show.open_run``."""

from __future__ import annotations

import json

import typer

from normguide.cli.app import app
from normguide.cli.console import print_evaluation
from normguide.config import EXPORT_FORMATS, RunConfig
from normguide.data import layout

#: Exit codes: the run is complete / exists but is not complete / is not a run (or unreadable).
EXIT_COMPLETE, EXIT_INCOMPLETE, EXIT_NOT_A_RUN = 0, 1, 2


@app.command()
def evaluate(
    run_uri: str = typer.Argument(..., help="A run's root: <output>/<run_id> (local dir or s3:// URI)."),
    clip_model: str | None = typer.Option(None, help="Local CLIP directory to judge with (default: the run's model's own judge, the demo's digit classifier)."),
    real_test: str | None = typer.Option(None, help="Concept table of held-out real images per concept (train on synthetic, test on real)."),
    labelled_table: str | None = typer.Option(None, help="Labelled real images (Parquet: image_uri, label = concept_id for the run's concepts, split train/test) for the long-tail protocol on CLIP features (needs --clip-model or the run's evaluation.clip_model)."),
    endpoint_url: str | None = typer.Option(None, help="S3-compatible endpoint URL for s3:// runs."),
) -> None:
    """Evaluate an existing run: write eval/metrics.parquet, eval/report.md and eval/metrics.png
    (and with a labelled table eval/longtail.parquet)."""
    from rich.console import Console

    from normguide.pipeline import RunContext, steps

    console = Console()
    try:
        cfg, store = existing_run(run_uri, endpoint_url)
        cfg = cfg.with_overrides(**{"evaluation.clip_model": clip_model, "evaluation.real_test": real_test,
                                    "evaluation.labelled_table": labelled_table,
                                    "evaluation.judge": "clip" if clip_model else None})
        record = steps.evaluate(RunContext.create(cfg, storage=store))
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    print_evaluation(console, record)


def existing_run(run_uri: str, endpoint_url: str | None):
    """The RunConfig recorded in a run's run.json (credentials from the environment, never
    from the record, which masks them) and the run's store (opened by
    :func:`normguide.data.run_record.open_run`, as ``show`` opens it)."""
    from normguide.data import run_record

    storage_config = {"endpoint_url": endpoint_url} if endpoint_url else {}
    store = run_record.open_run(run_uri, storage_config=RunConfig(storage=storage_config).storage)
    doc = json.loads(store.read_bytes(layout.RUN_JSON))
    try:
        cfg = RunConfig.model_validate({**doc["config"], "storage": storage_config})
    except Exception as exc:  # noqa: BLE001 - a record we cannot read is named
        raise ValueError(f"{store.uri(layout.RUN_JSON)} is not a readable normguide run record: {exc}") from None
    return cfg, store


@app.command("export")
def export_command(
    run_uri: str = typer.Argument(..., help="A run's root: <output>/<run_id> (local dir or s3:// URI)."),
    format: list[str] = typer.Option(
        list(EXPORT_FORMATS), "--format", "-f", help=f"Export format, repeatable: {', '.join(EXPORT_FORMATS)}. Default: all."
    ),
    shard_size: int | None = typer.Option(
        None, help="Samples per WebDataset tar / hf Parquet file (default: the run's export_shard_size, 1000)."
    ),
    endpoint_url: str | None = typer.Option(None, help="S3-compatible endpoint URL for s3:// runs."),
) -> None:
    """Export a finished run for training jobs: hf (datasets Parquet) and webdataset (tar shards).

    Prints one line per format: its folder and a line of Python that loads it. The run's dataset
    card (README.md) and report are rewritten to name and load the exports. Rerunning it
    finishes an interrupted export and is a no-op for a finished one.
    """
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


@app.command("show")
def show_command(
    run_uri: str = typer.Argument(..., help="The run's folder: <output>/<run_id>, a path or s3:// URI."),
    endpoint_url: str | None = typer.Option(
        None, help="S3-compatible endpoint URL (credentials from the environment)."),
) -> None:
    """Print a run's status, images per concept and method, evaluation and where its report is.

    Exits 0 for a complete run, 1 for one that is not complete (running, failed, interrupted)
    or damaged (a quick check: one listing per concept folder, sizes only), 2 when the location
    is not a normguide run.
    """
    from normguide.reporting.show import open_run, run_status, show_text

    try:
        status = run_status(open_run(run_uri, endpoint_url=endpoint_url))
    except (ValueError, FileNotFoundError) as exc:  # NotARunError is a ValueError
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_NOT_A_RUN) from None
    typer.echo(show_text(status), nl=False)
    raise typer.Exit(EXIT_COMPLETE if status.complete else EXIT_INCOMPLETE)


@app.command("verify")
def verify_command(
    run_uri: str = typer.Argument(..., help="The run's folder: <output>/<run_id>, a path or s3:// URI."),
    quick: bool = typer.Option(False, "--quick", help="Existence and size only (no image read)."),
    repair: bool = typer.Option(False, "--repair", help="Delete damaged images and their concepts' manifest parts "
                                "(a rerun of `normguide run` regenerates them) and move orphans aside to _removed/."),
    endpoint_url: str | None = typer.Option(
        None, help="S3-compatible endpoint URL (credentials from the environment)."),
) -> None:
    """Verify a finished run: every manifest row's image exists with its sha256, every part is
    readable, nothing is orphaned. Exit 0 verified, 1 damaged or orphaned, 2 not a run.

    Cost: one listing per concept folder; without --quick every image is read back once.
    With --repair: exit 0 when the run is verified after it, 1 when a rerun must regenerate
    concepts (named)."""
    from normguide.data.verify import repair_run, verify_run
    from normguide.reporting.show import open_run

    try:
        store = open_run(run_uri, endpoint_url=endpoint_url)
        result = verify_run(store, full=not quick)
        typer.echo("\n".join(result.lines()))
        fixed = repair_run(store, result) if repair and not result.ok else None
    except (ValueError, FileNotFoundError) as exc:  # NotARunError, LeaseHeld are ValueErrors
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_NOT_A_RUN) from None
    if fixed is not None:
        typer.echo("\n".join(fixed.lines()))
        raise typer.Exit(EXIT_INCOMPLETE if fixed.needs_rerun else EXIT_COMPLETE)
    raise typer.Exit(EXIT_COMPLETE if result.ok else EXIT_INCOMPLETE)
