"""The ``normguide`` command.

``normguide run`` with no arguments runs the shipped example (examples/) on the demo model into
./outputs/. With no Prefect server configured, Prefect starts its ephemeral API; with
``PREFECT_API_URL`` set, the run is tracked on that server.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

from normguide.config import RunConfig, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Synthetic image datasets from norm-guided diffusion seeds.")


def _build_config(
    config_file: Optional[Path], overrides: dict
) -> RunConfig:
    base = load_config(config_file) if config_file else RunConfig()
    return base.with_overrides(**overrides)


@app.command()
def run(
    concepts: Optional[str] = typer.Option(None, help="Concept table (Parquet): a path or s3:// URI. Default: the shipped example."),
    output: Optional[str] = typer.Option(None, help="Output root (local dir or s3://bucket/prefix). Default: ./outputs"),
    model: Optional[str] = typer.Option(None, help="'demo', a local diffusers pipeline directory, or a hub id."),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML or JSON run configuration; options given here override it."),
    run_id: Optional[str] = typer.Option(None, help="Run id (default: derived from the configuration, so reruns resume)."),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N or auto."),
    dtype: Optional[str] = typer.Option(None, help="float32, float16 or bfloat16 (half precision on CUDA)."),
    methods: Optional[str] = typer.Option(None, help="Comma-separated seed methods: nao,slerp,lerp,cog,random."),
    num_images: Optional[int] = typer.Option(None, help="Images per concept and method."),
    steps: Optional[int] = typer.Option(None, help="Generation (denoising) steps."),
    guidance: Optional[float] = typer.Option(None, help="Generation guidance scale."),
    inversion_steps: Optional[int] = typer.Option(None, help="DDIM inversion steps."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size for inversion and generation."),
    reconstruction: Optional[bool] = typer.Option(None, "--reconstruction/--no-reconstruction", help="Record each seed's reconstruction error."),
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint URL for s3:// inputs and outputs."),
) -> None:
    """Run the dataset-generation flow and print where the dataset is and a summary."""
    from rich.console import Console

    console = Console(stderr=False)
    try:
        cfg = _build_config(
            config,
            {
                "concepts": concepts, "output": output, "model": model, "run_id": run_id,
                "device": device, "dtype": dtype,
                "plan.methods": tuple(m.strip() for m in methods.split(",") if m.strip()) if methods else None,
                "plan.num_images": num_images,
                "generation.num_inference_steps": steps, "generation.guidance_scale": guidance,
                "inversion.num_inference_steps": inversion_steps,
                "generation.batch_size": batch_size, "inversion.batch_size": batch_size,
                "inversion.reconstruction": reconstruction,
                "storage.endpoint_url": endpoint_url,
            },
        )
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None

    from normguide.run import output_root

    where = output_root(cfg)
    if cfg.model.split(":")[0] == "demo":
        console.print(
            "[yellow]Model 'demo': a tiny built-in pipeline with random weights. Its images are noise; "
            "pass --model with a real Stable Diffusion checkpoint for a real dataset.[/yellow]"
        )
    console.print(f"run [bold]{cfg.resolved_run_id()}[/bold] -> {where}", soft_wrap=True)
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "normguide")
    # The ephemeral API's telemetry heartbeat races the run for its SQLite file at start-up and
    # prints a 'database is locked' traceback; a user's explicit setting still wins.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

    from flows.generate_dataset import generate_dataset

    state = generate_dataset(config=cfg, return_state=True)
    summary = state.result(raise_on_failure=False)
    if not isinstance(summary, dict):  # the flow failed before it could summarise
        console.print(f"[red]run failed:[/red] {summary}")
        raise typer.Exit(1)
    _print_summary(console, summary)
    raise typer.Exit(1 if summary["failed"] else 0)


def _print_summary(console, summary: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from normguide.report import summary_status

    table = Table(title=f"normguide run {summary['run_id']}: {summary_status(summary)}")
    for col in ("concept", "status", "images", "generated", "methods", "mean seed z"):
        table.add_column(col, no_wrap=True)
    for cid, c in summary["concepts"].items():
        z = c.get("mean_seed_zscore")
        status = f"[red]{c['status']}[/red]" if c["status"] == "failed" else c["status"]
        table.add_row(
            cid, status, str(c.get("images", 0)), str(c.get("generated", 0)),
            ", ".join(c.get("methods", [])), "" if z is None else f"{z:+.2f}",
        )
    if summary["concepts"]:
        console.print(table)
    else:
        console.print(f"run {summary['run_id']}: {summary_status(summary)}")
    for cid, c in summary["concepts"].items():
        if c.get("error"):
            console.print(f"[red]{escape(cid)}[/red]: {escape(c['error'])}", soft_wrap=True, highlight=False)
    console.print(f"dataset: {summary['output_root']}", soft_wrap=True)
    if summary.get("manifest_uri"):
        console.print(f"manifest: {summary['manifest_uri']}", soft_wrap=True)
    if summary.get("is_demo"):
        console.print("[yellow]note: demo model: these images are noise, not a real dataset.[/yellow]")


@app.command()
def validate(
    concepts: str = typer.Argument(..., help="Concept table (Parquet): a path or s3:// URI."),
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint URL."),
) -> None:
    """Validate a concept table against the schema and print its concepts."""
    from normguide.run import load_concepts

    cfg = RunConfig().with_overrides(concepts=concepts, **{"storage.endpoint_url": endpoint_url})
    try:
        rows = load_concepts(cfg)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for c in rows:
        typer.echo(f"{c.concept_id}\t{c.name}\t{len(c.reference_uris)} reference(s)")
    typer.echo(f"{len(rows)} concept(s) OK")


@app.command("config")
def show_config(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="A config file to validate and show merged with the defaults."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of YAML."),
) -> None:
    """Print the full run configuration (defaults, or a file merged with them), secrets masked."""
    try:
        cfg = load_config(config) if config else RunConfig()
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    data = cfg.public_dict()
    typer.echo(json.dumps(data, indent=2) if as_json else yaml.safe_dump(data, sort_keys=False))


def main() -> None:  # pragma: no cover - console entry
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
