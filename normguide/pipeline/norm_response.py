"""``normguide norm-response``: measure the run's model's norm response before choosing a seed
method (normguide.evaluation.norm_response does the measuring; this reads the run's config,
concept table, references and judge, and writes the results).

Writes under ``--output`` (default ``<config output>/norm-response``, a local path or s3:// URI):
``curve.parquet`` and ``curve.csv`` (one row per concept, direction kind and r; "(all)" rows are
the mean over concepts), ``methods.csv`` (each method's seed r per concept), ``inversions.csv``,
``norm_response.png`` (the plot), ``verdict.md`` and ``settings.json``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Optional

import typer

from normguide.config import RunConfig


def make_judge(spec: str | None, ctx=None):
    """``"digits"`` (the demo's classifier), a local CLIP directory, or None: the run's
    evaluation judge (``evaluation.judge`` / ``clip_model``). One-line ValueError otherwise."""
    from normguide import evaluation as ev

    if spec is None:
        from normguide.pipeline import steps

        judge = steps.evaluation_judge(ctx)
        if judge is None:
            raise ValueError("no judge: this model has no built-in one; pass --judge with a local CLIP directory "
                             "(or 'digits' for the demo model)")
        return judge
    if spec == "digits":
        return ev.DigitsJudge()
    path = Path(spec).expanduser()
    if not path.exists():
        raise ValueError(f"--judge {spec!r}: no such directory; give 'digits' or a local CLIP model directory")
    return ev.ClipJudge(path)


def run_norm_response(cfg: RunConfig, *, judge: str | None = None, radii=None, num_random: int = 12,
                      steps: int | None = None, output: str | None = None, concept_ids: list[str] | None = None,
                      batch_size: int = 64):
    """Measure and write; returns (result, output URI)."""
    from normguide.data.storage import Storage
    from normguide.evaluation import norm_response as nr
    from normguide.pipeline import RunContext
    from normguide.pipeline import steps as st

    radii = nr.check_radii(nr.DEFAULT_RADII if radii is None else radii)
    out = output or f"{cfg.output.rstrip('/')}/norm-response"
    store = Storage.open(out, storage_config=cfg.storage)
    ctx = RunContext.create(cfg, storage=store)
    the_judge = make_judge(judge, ctx)
    concepts = st.load_concepts(ctx, concept_ids)
    inputs = [nr.ConceptInput(c.concept_id, c.name, c.resolved_prompt(cfg.prompt_template), st.read_references(ctx, c))
              for c in concepts]
    if hasattr(the_judge, "label_names"):
        the_judge.label_names([c.name for c in inputs])  # an unknown name fails here, before the model loads
    result = nr.norm_response(
        ctx.model(), inputs, the_judge, radii=radii, num_random=num_random,
        guidance_scale=cfg.generation.guidance_scale,
        num_inference_steps=steps or cfg.generation.num_inference_steps,
        inversion_steps=cfg.inversion.num_inference_steps, inversion_guidance=cfg.inversion.guidance_scale,
        seed=cfg.seed, batch_size=batch_size,
        batch_invariant=cfg.generation.batch_invariant if cfg.generation.batch_invariant is not None else False,
    )
    buf = io.BytesIO()
    result.curve.to_parquet(buf, index=False)
    store.write_bytes("curve.parquet", buf.getvalue())
    store.write_bytes("curve.csv", result.curve.to_csv(index=False, float_format="%.4f").encode())
    store.write_bytes("methods.csv", result.methods.to_csv(index=False, float_format="%.4f").encode())
    store.write_bytes("inversions.csv", result.inversions.to_csv(index=False, float_format="%.4f").encode())
    store.write_bytes("settings.json", json.dumps({**result.settings, "model": cfg.model}, indent=2).encode())
    store.write_bytes("norm_response.png", nr.plot_norm_response(result))
    store.write_bytes("verdict.md", (result.verdict + "\n").encode())
    return result, store.root


def norm_response_command(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="Run config (model, concepts, guidance, inversion, seed)."),  # noqa: UP045
    model: Optional[str] = typer.Option(None, help="Model (default: the config's, else demo)."),  # noqa: UP045
    concepts: Optional[str] = typer.Option(None, help="Concept table (default: the config's, else the example)."),  # noqa: UP045
    judge: Optional[str] = typer.Option(None, help="'digits' or a local CLIP directory (default: the run's evaluation judge)."),  # noqa: UP045
    radii: Optional[str] = typer.Option(None, help="Relative norms r = |z|/sqrt(d), comma-separated (default 0.3,...,1.5)."),  # noqa: UP045
    images: int = typer.Option(12, "--images", min=1, help="Random rays per concept (plus one ray per reference)."),
    guidance: Optional[float] = typer.Option(None, help="Guidance scale (default: the config's generation.guidance_scale)."),  # noqa: UP045
    steps: Optional[int] = typer.Option(25, help="DDIM steps for generation."),  # noqa: UP045
    concept_ids: Optional[str] = typer.Option(None, help="Only these concepts (comma-separated)."),  # noqa: UP045
    output: Optional[str] = typer.Option(None, help="Where to write (default <output>/norm-response)."),  # noqa: UP045
    device: Optional[str] = typer.Option(None, help="cpu, cuda, ..."),  # noqa: UP045
) -> None:
    """Measure the model's norm response (recognisability and diversity against the seed's relative
    norm) and say what it means for the seed methods. Run it before choosing a method."""
    from normguide.config import load_config

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
