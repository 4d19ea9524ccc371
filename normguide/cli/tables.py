"""Commands that read a configuration or a concept table and generate nothing: ``validate``,
``plan`` (the dry run), ``methods`` and ``config``."""

from __future__ import annotations

import json
from pathlib import Path

import typer
import yaml

from normguide.cli.app import (
    DEFAULTS,
    app,
    build_config,
    fail,
    split,
    step_options,
    with_refine_options,
)
from normguide.cli.console import print_existing
from normguide.config import RunConfig, load_config


@app.command()
def methods() -> None:
    """List the seed methods (for --methods and plan.methods)."""
    from normguide.data.methods import METHOD_DESCRIPTIONS  # no torch

    width = max(len(name) for name in METHOD_DESCRIPTIONS) + 2
    for name, description in METHOD_DESCRIPTIONS.items():
        typer.echo(f"{name:<{width}}{description}")


@app.command()
def validate(
    concepts: str = typer.Argument(..., help="Concept table (Parquet): a path or s3:// URI."),
    endpoint_url: str | None = typer.Option(None, help="S3-compatible endpoint URL.", show_default="AWS"),
    references: bool = typer.Option(True, "--references/--no-references", help="Also read and decode every reference image."),
    model: str = typer.Option(DEFAULTS.model, help="The model the table is meant for: its tokenizer is read (no weights) to warn of prompt words it does not know; for the demo, of concepts that are not digits."),
    prompt_template: str = typer.Option(DEFAULTS.prompt_template, help="Prompt for concepts without their own; {name} is the concept's name."),
) -> None:
    """Check a concept table as `run` would (schema, ids, reference images exist and decode,
    sizes, URI schemes) without a model; print its concepts. Exit 2 naming every problem."""
    from rich.console import Console
    from rich.markup import escape

    from normguide.data import references as refs
    from normguide.data.storage import read_bytes

    console = Console(stderr=True)
    try:
        cfg = RunConfig().with_overrides(concepts=concepts, **{"storage.endpoint_url": endpoint_url})

        def read_input(uri: str) -> bytes:  # as a run reads its inputs; nothing is written
            return read_bytes(uri, storage_config=cfg.storage)

        rows = refs.load_concepts(cfg, read_input, None)
        if references:
            problems = []
            for c in rows:  # every concept, done or not
                try:
                    refs.read_references(read_input, c)
                except ValueError as exc:
                    problems.append(str(exc))
            if problems:
                raise ValueError(f"{len(problems)} concept(s) have unusable reference images:\n  " + "\n  ".join(problems))
    except FileNotFoundError as exc:
        raise fail(console, f"concepts: concept table {concepts!r} does not exist ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise fail(console, str(exc)) from None
    for c in rows:
        typer.echo(f"{c.concept_id}\t{c.name}\t{len(c.reference_uris)} reference(s)")
    from normguide.vocabulary import drawing_warnings

    warnings = drawing_warnings(model, rows, prompt_template)
    for line in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(line)}", soft_wrap=True, highlight=False)
    typer.echo(f"{len(rows)} concept(s) OK" + ("" if references else " (reference images not read)")
               + (f", {len(warnings)} warning(s): the model may not draw what they ask (see above)" if warnings else ""))


@app.command("plan")
@with_refine_options
def plan_command(
    concepts: str | None = typer.Option(None, help="Concept table (Parquet): a path or s3:// URI.", show_default="the shipped example"),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML or JSON run configuration."),
    output: str | None = typer.Option(None, help="Output root, as for `run`.", show_default=DEFAULTS.output),
    model: str | None = typer.Option(None, help="Model, as for `run`.", show_default=DEFAULTS.model),
    run_id: str | None = typer.Option(None, help="Run id.", show_default="derived as `run` derives it"),
    prompt_template: str | None = typer.Option(None, help="Prompt for concepts without their own.", show_default=DEFAULTS.prompt_template),
    methods: str | None = typer.Option(None, help="Comma-separated seed methods.", show_default=",".join(DEFAULTS.plan.methods)),
    num_images: int | None = typer.Option(None, help="Images per concept and method.", show_default=str(DEFAULTS.plan.num_images)),
    steps: int | None = typer.Option(None, help="Generation (denoising) steps.", show_default=str(DEFAULTS.generation.num_inference_steps)),
    guidance: float | None = typer.Option(None, help="Generation guidance scale.", show_default=str(DEFAULTS.generation.guidance_scale)),
    inversion_steps: int | None = typer.Option(None, help="DDIM inversion steps.", show_default=str(DEFAULTS.inversion.num_inference_steps)),
    batch_size: int | None = typer.Option(None, help="Batch size for inversion and generation.", show_default=f"{DEFAULTS.inversion.batch_size} / {DEFAULTS.generation.batch_size}"),
    reconstruction: bool | None = typer.Option(None, "--reconstruction/--no-reconstruction", help="Record each seed's reconstruction error.", show_default=str(DEFAULTS.inversion.reconstruction).lower()),
    concept_ids: str | None = typer.Option(None, "--concept-ids", help="Comma-separated concept ids.", show_default="all"),
    seed: int | None = typer.Option(None, help="Base seed of the random method.", show_default=str(DEFAULTS.seed)),
    endpoint_url: str | None = typer.Option(None, help="S3-compatible endpoint URL.", show_default="AWS"),
    quick: bool = typer.Option(False, "--quick", metavar="", help="Plan the quick look of `run --quick`."),
    refine_overrides: dict | None = None,
) -> None:
    """Dry run: print the seed plan per concept (methods, images, t values, expected seed
    z-scores) without inverting or generating anything.

    Expected z-scores come from planning with N(0, I) stand-ins for the inverted seeds (one per
    reference, the model's seed shape): real inversions differ, and `run` records those. The
    refinement options are `run`'s: they name the same run (its id), not a different plan."""
    from rich.console import Console
    from rich.table import Table

    from normguide.data.dry_plan import dry_plans
    from normguide.diffusion.seed_shape import seed_shape
    from normguide.pipeline import RunContext
    from normguide.pipeline import steps as run_steps

    console = Console()
    try:
        cfg = build_config(config, step_options(
            config, concepts, output, model, run_id, prompt_template, seed, methods, num_images, steps, guidance,
            inversion_steps, batch_size, reconstruction, endpoint_url, **(refine_overrides or {})), quick=quick)
        ctx = RunContext.create(cfg)
        rows = run_steps.load_concepts(ctx, list(split(concept_ids)) if concept_ids else None)
        shape = seed_shape(cfg.model)
    except (ValueError, FileNotFoundError) as exc:
        raise fail(console, str(exc)) from None
    plans = dry_plans(cfg, rows, shape)
    console.print(f"run {ctx.run_id} -> {ctx.storage.root}: {len(rows)} concept(s), "
                  f"seed shape {tuple(shape)}; nothing is written", highlight=False, soft_wrap=True)
    total = 0
    if len(plans) > PLAN_TABLES:  # many concepts: one table per distinct plan (printing is the cost)
        shared: dict[tuple, list] = {}
        for concept, groups in plans:
            shared.setdefault(tuple(groups), []).append(concept)
        items = [(f"{len(cs)} concept(s) with {len(cs[0].reference_uris)} reference(s): "
                  f"{', '.join(c.concept_id for c in cs[:5])}{', ...' if len(cs) > 5 else ''}", list(g), len(cs))
                 for g, cs in shared.items()]
    else:
        items = [(f"{c.concept_id} ({c.name}, {len(c.reference_uris)} reference(s))", g, 1) for c, g in plans]
    for title, groups, count in items:
        table = Table(title=title, title_justify="left")
        for col in ("method", "kind", "images", "t", "pairs", "expected z (min..max)"):
            table.add_column(col, no_wrap=True)
        for g in groups:
            table.add_row(*g)
            total += int(g[2]) * count
        console.print(table)
    console.print(f"{total} image(s) in all", highlight=False)
    print_existing(console, ctx, rows)


#: Above this many concepts, ``plan`` prints one table per distinct plan instead of one per concept.
PLAN_TABLES = 50


@app.command("config")
def show_config(
    config: Path | None = typer.Option(None, "--config", "-c", help="A config file to validate and show merged with the defaults."),
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
