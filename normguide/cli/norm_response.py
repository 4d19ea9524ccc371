"""``normguide norm-response``: measure a model's norm response (``normguide.pipeline.norm_response``)
and print the verdict."""

from __future__ import annotations

from pathlib import Path

import typer

from normguide.cli.app import app
from normguide.config import RunConfig


@app.command("norm-response")
def norm_response_command(
    config: Path | None = typer.Option(None, "--config", "-c", help="Run config (model, concepts, guidance, inversion, seed)."),
    model: str | None = typer.Option(None, help="Model (default: the config's, else demo)."),
    concepts: str | None = typer.Option(None, help="Concept table (default: the config's, else the example)."),
    judge: str | None = typer.Option(None, help="'digits' or a local CLIP directory (default: the run's evaluation judge)."),
    radii: str | None = typer.Option(None, help="Relative norms r = |z|/sqrt(d), comma-separated (default 0.3,...,1.5)."),
    images: int = typer.Option(12, "--images", min=1, help="Random rays per concept (plus one ray per reference)."),
    guidance: float | None = typer.Option(None, help="Guidance scale (default: the config's generation.guidance_scale)."),
    steps: int | None = typer.Option(25, help="DDIM steps for generation."),
    concept_ids: str | None = typer.Option(None, help="Only these concepts (comma-separated)."),
    output: str | None = typer.Option(None, help="Where to write (default <output>/norm-response)."),
    device: str | None = typer.Option(None, help="cpu, cuda, ..."),
) -> None:
    """Measure the model's norm response (recognisability and diversity against the seed's relative
    norm) and say what it means for the seed methods. Run it before choosing a method."""
    from normguide.config import load_config
    from normguide.pipeline.norm_response import run_norm_response

    try:
        cfg = load_config(config) if config else RunConfig()
        cfg = cfg.with_overrides(**{"model": model, "concepts": concepts, "generation.guidance_scale": guidance,
                                    "device": device})
        grid = None if radii is None else [x for x in radii.split(",") if x.strip()]
        if grid is not None:
            try:
                grid = [float(x) for x in grid]
            except ValueError:
                raise ValueError(f"--radii: expected comma-separated numbers, got {radii!r}") from None
        ids = [x for x in concept_ids.split(",") if x] if concept_ids else None
        result, where = run_norm_response(cfg, judge=judge, radii=grid, num_random=images, steps=steps,
                                          output=output, concept_ids=ids)
    except (ValueError, FileNotFoundError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(result.verdict)
    typer.echo(f"\nwritten: {where}/ (curve.parquet, curve.csv, methods.csv, norm_response.png, verdict.md)")
