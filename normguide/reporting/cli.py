"""``normguide show <run>``: the summary of an existing run (the lead registers the command:
``app.command("show")(show_command)`` in normguide/cli.py)."""

from __future__ import annotations

from typing import Optional

import typer

#: Exit codes: the run is complete / exists but is not complete / is not a run (or unreadable).
EXIT_COMPLETE, EXIT_INCOMPLETE, EXIT_NOT_A_RUN = 0, 1, 2


def show_command(
    run_uri: str = typer.Argument(..., help="The run's folder: <output>/<run_id>, a path or s3:// URI."),
    endpoint_url: Optional[str] = typer.Option(  # noqa: UP045 - as in normguide/cli.py
        None, help="S3-compatible endpoint URL (credentials from the environment)."),
) -> None:
    """Print a run's status, images per concept and method, evaluation and where its report is.

    Exits 0 for a complete run, 1 for one that is not complete (running, failed, interrupted),
    2 when the location is not a normguide run.
    """
    from normguide.reporting.show import open_run, run_status, show_text

    try:
        status = run_status(open_run(run_uri, endpoint_url=endpoint_url))
    except (ValueError, FileNotFoundError) as exc:  # NotARunError is a ValueError
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_NOT_A_RUN) from None
    typer.echo(show_text(status), nl=False)
    raise typer.Exit(EXIT_COMPLETE if status.complete else EXIT_INCOMPLETE)


def verify_command(
    run_uri: str = typer.Argument(..., help="The run's folder: <output>/<run_id>, a path or s3:// URI."),
    quick: bool = typer.Option(False, "--quick", help="Existence and size only (no image read)."),
    endpoint_url: Optional[str] = typer.Option(  # noqa: UP045 - as in normguide/cli.py
        None, help="S3-compatible endpoint URL (credentials from the environment)."),
) -> None:
    """Verify a finished run: every manifest row's image exists with its sha256, every part is
    readable, nothing is orphaned. Exit 0 verified, 1 damaged or orphaned, 2 not a run.

    Cost: one listing per concept folder; without --quick every image is read back once."""
    from normguide.data.verify import verify_run
    from normguide.reporting.show import open_run

    try:
        result = verify_run(open_run(run_uri, endpoint_url=endpoint_url), full=not quick)
    except (ValueError, FileNotFoundError) as exc:  # NotARunError is a ValueError
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(EXIT_NOT_A_RUN) from None
    typer.echo("\n".join(result.lines()))
    raise typer.Exit(EXIT_COMPLETE if result.ok else EXIT_INCOMPLETE)
