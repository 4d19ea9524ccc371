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
    methods: Optional[str] = typer.Option(None, help="Comma-separated seed methods (`normguide methods` lists them)."),
    num_images: Optional[int] = typer.Option(None, help="Images per concept and method."),
    steps: Optional[int] = typer.Option(None, help="Generation (denoising) steps."),
    guidance: Optional[float] = typer.Option(None, help="Generation guidance scale."),
    inversion_steps: Optional[int] = typer.Option(None, help="DDIM inversion steps."),
    batch_size: Optional[int] = typer.Option(None, help="Batch size for inversion and generation."),
    reconstruction: Optional[bool] = typer.Option(None, "--reconstruction/--no-reconstruction", help="Record each seed's reconstruction error."),
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint URL for s3:// inputs and outputs."),
    prefect: bool = typer.Option(True, "--prefect/--no-prefect", help="Run as a Prefect flow (tracking, UI, retries), or in this process with the local driver; both write the same bytes."),
) -> None:
    """Generate a dataset and print where it is and a summary."""
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

    from normguide.pipeline import RunSummary, output_root

    if prefect and (secret_fields := cfg.inline_secrets()):
        from normguide.config import secrets_refused

        console.print(f"[red]error:[/red] {secrets_refused(secret_fields, 'flow-run parameters')}",
                      soft_wrap=True, highlight=False)
        raise typer.Exit(2)
    console.print(f"run [bold]{cfg.resolved_run_id()}[/bold] -> {output_root(cfg)}", soft_wrap=True)
    if prefect:
        os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "normguide")
        # The ephemeral API's telemetry heartbeat races the run for its SQLite file at start-up and
        # prints a 'database is locked' traceback; a user's explicit setting still wins.
        os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        # Prefect waits 20 s for its ephemeral API by default; its first start also creates the
        # database, which takes longer than that on a busy laptop or CI box.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
        from normguide.flows.generate_dataset import generate_dataset

        state = generate_dataset(config=cfg, return_state=True)
        summary = state.result(raise_on_failure=False)
        if not isinstance(summary, RunSummary):  # the flow failed before it could summarise
            console.print(f"[red]run failed:[/red] {summary}")
            raise typer.Exit(1)
    else:
        import logging

        from normguide.pipeline import run_dataset

        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        try:
            summary = run_dataset(cfg, progress=lambda n, total, o: console.print(
                f"[{n}/{total}] {o.concept_id}: {o.status}, {o.images} image(s), {o.generated} generated"))
        except ValueError as exc:
            console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
            raise typer.Exit(2) from None
    _print_summary(console, summary)
    raise typer.Exit(0 if summary.ok else 1)


def _print_summary(console, summary) -> None:
    from rich.markup import escape
    from rich.table import Table

    from normguide.report import format_z

    table = Table(title=f"normguide run {summary.run_id}: {summary.status}")
    for col in ("concept", "status", "images", "generated", "methods", "mean seed z"):
        table.add_column(col, no_wrap=True)
    for cid, c in summary.concepts.items():
        status = f"[red]{c.status}[/red]" if c.status == "failed" else c.status
        table.add_row(cid, status, str(c.images), str(c.generated), ", ".join(c.methods), format_z(c.mean_seed_zscore))
    if summary.concepts:
        console.print(table)
    else:
        console.print(f"run {summary.run_id}: {summary.status}")
    for cid, c in summary.concepts.items():
        if c.error:
            console.print(f"[red]{escape(cid)}[/red]: {escape(c.error)}", soft_wrap=True, highlight=False)
    console.print(f"dataset: {summary.output_root}", soft_wrap=True)
    if summary.manifest_uri:
        console.print(f"manifest: {summary.manifest_uri}", soft_wrap=True)
    if summary.evaluation is not None:
        _print_evaluation(console, summary.evaluation)
    if summary.evaluation_error:
        console.print(f"[red]evaluation failed:[/red] {escape(summary.evaluation_error)}", soft_wrap=True, highlight=False)
    if summary.is_demo and summary.model_note:
        console.print(f"[yellow]note: model {summary.model}[/yellow]", soft_wrap=True)


def _print_evaluation(console, record) -> None:
    from rich.table import Table

    cols = sorted({c for v in record.per_method.values() for c in v})
    table = Table(title=f"evaluation ({record.judge}), mean over concepts")
    for col in ["method", *cols]:
        table.add_column(col, no_wrap=True)
    for method, values in record.per_method.items():
        table.add_row(method, *("" if values.get(c) is None else f"{values[c]:.3f}" for c in cols))
    console.print(table)
    console.print(f"evaluation: {record.report_uri}", soft_wrap=True)


@app.command()
def evaluate(
    run_uri: str = typer.Argument(..., help="A run's root: <output>/<run_id> (local dir or s3:// URI)."),
    clip_model: Optional[str] = typer.Option(None, help="Local CLIP directory to judge with (default: the run's model's own judge, the demo's digit classifier)."),
    real_test: Optional[str] = typer.Option(None, help="Concept table of held-out real images per concept (train on synthetic, test on real)."),
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint URL for s3:// runs."),
) -> None:
    """Evaluate an existing run: write eval/metrics.parquet, eval/report.md and eval/metrics.png."""
    from rich.console import Console

    from normguide.pipeline import RunContext, steps

    console = Console()
    try:
        cfg, store = _existing_run(run_uri, endpoint_url)
        cfg = cfg.with_overrides(**{"evaluation.clip_model": clip_model, "evaluation.real_test": real_test,
                                    "evaluation.judge": "clip" if clip_model else None})
        record = steps.evaluate(RunContext.create(cfg, storage=store))
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    _print_evaluation(console, record)


def _existing_run(run_uri: str, endpoint_url: Optional[str]):
    """The RunConfig recorded in a run's run.json (credentials from the environment, never
    from the record, which masks them) and the run's store."""
    from normguide.data.storage import Storage

    storage_config = {"endpoint_url": endpoint_url} if endpoint_url else {}
    store = Storage.open(run_uri.rstrip("/"), storage_config=RunConfig(storage=storage_config).storage)
    if not store.exists("run.json"):
        raise ValueError(f"{run_uri} is not a normguide run: it has no run.json")
    doc = json.loads(store.read_bytes("run.json"))
    try:
        cfg = RunConfig.model_validate({**doc["config"], "storage": storage_config})
    except Exception as exc:  # noqa: BLE001 - a record we cannot read is named
        raise ValueError(f"{store.uri('run.json')} is not a readable normguide run record: {exc}") from None
    return cfg, store


@app.command()
def methods() -> None:
    """List the seed methods (for --methods and plan.methods)."""
    from normguide.data.plan import SEED_METHODS

    width = max(len(name) for name in SEED_METHODS) + 2
    for m in SEED_METHODS.values():
        typer.echo(f"{m.name:<{width}}{m.description}")


@app.command()
def validate(
    concepts: str = typer.Argument(..., help="Concept table (Parquet): a path or s3:// URI."),
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint URL."),
) -> None:
    """Validate a concept table against the schema and print its concepts."""
    from normguide.data.storage import Storage
    from normguide.pipeline import RunContext, steps

    cfg = RunConfig().with_overrides(concepts=concepts, **{"storage.endpoint_url": endpoint_url})
    try:
        # no output is written: the store is only where a run would go
        rows = steps.load_concepts(RunContext.create(cfg, storage=Storage.open(".")), None)
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
