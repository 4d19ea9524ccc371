"""``normguide run``: build the configuration, read the table once, and run the recipe in this
process (the local driver) or as a Prefect flow run; print the summary."""

from __future__ import annotations

from pathlib import Path

import typer

from normguide.cli.app import (
    DEFAULTS,
    app,
    build_config,
    fail,
    split,
    step_options,
    with_refine_options,
)
from normguide.cli.console import print_summary, progress_reporter
from normguide.cli.prefect_process import Interrupts, is_whole_table, prefect_server_configured, run_prefect
from normguide.config import RunConfig
from normguide.errors import BAD_INPUT, EXIT_FAILED, EXIT_OK


@app.command()
@with_refine_options
def run(
    concepts: str | None = typer.Option(None, help="Concept table (Parquet): a path or s3:// URI.", show_default="the shipped example (3 rare digits)"),
    output: str | None = typer.Option(None, help="Output root (local dir or s3://bucket/prefix); the run writes under <output>/<run-id>/.", show_default=DEFAULTS.output),
    model: str | None = typer.Option(None, help="'demo', a local diffusers pipeline directory, or a hub id.", show_default=DEFAULTS.model),
    config: Path | None = typer.Option(None, "--config", "-c", help="YAML or JSON run configuration; options given here override it."),
    run_id: str | None = typer.Option(None, help="Run id.", show_default="derived from the settings and the table's content, so reruns resume"),
    concept_ids: str | None = typer.Option(None, "--concept-ids", help="Comma-separated concept ids: run only these (no finalize unless they are the whole table).", show_default="all"),
    prompt_template: str | None = typer.Option(None, help="Prompt for concepts without their own; {name} is the concept's name.", show_default=DEFAULTS.prompt_template),
    seed: int | None = typer.Option(None, help="Base seed of the random method.", show_default=str(DEFAULTS.seed)),
    device: str | None = typer.Option(None, help="cpu, cuda, cuda:N or auto.", show_default=DEFAULTS.device),
    dtype: str | None = typer.Option(None, help="float32, float16 or bfloat16 (half precision on CUDA).", show_default=DEFAULTS.dtype),
    compile: bool | None = typer.Option(None, "--compile/--no-compile", help="torch.compile the UNet (GPU; fixed shapes, one warm-up).", show_default="no"),
    methods: str | None = typer.Option(None, help="Comma-separated seed methods (`normguide methods` lists them).", show_default=",".join(DEFAULTS.plan.methods)),
    num_images: int | None = typer.Option(None, help="Images per concept and method.", show_default=str(DEFAULTS.plan.num_images)),
    steps: int | None = typer.Option(None, help="Generation (denoising) steps.", show_default=str(DEFAULTS.generation.num_inference_steps)),
    guidance: float | None = typer.Option(None, help="Generation guidance scale (1 to 100).", show_default=str(DEFAULTS.generation.guidance_scale)),
    inversion_steps: int | None = typer.Option(None, help="DDIM inversion steps.", show_default=str(DEFAULTS.inversion.num_inference_steps)),
    batch_size: int | None = typer.Option(None, help="Batch size for inversion and generation.", show_default=f"{DEFAULTS.inversion.batch_size} / {DEFAULTS.generation.batch_size}"),
    batch_invariant: bool | None = typer.Option(None, "--batch-invariant/--no-batch-invariant", help="Run the models one sample at a time inside a batch (inversion and generation), so an image's bytes do not depend on its batch mates; slower (docs/determinism.md).", show_default="no: batched, as diffusers"),
    batch_across_concepts: bool | None = typer.Option(None, "--batch-across-concepts/--no-batch-across-concepts", help="Fill generation batches across concept boundaries (a prompt per row): fewer, fuller batches where concepts have fewer images than a batch (docs/gpu.md).", show_default="no: batches per concept"),
    reconstruction: bool | None = typer.Option(None, "--reconstruction/--no-reconstruction", help="Record each seed's reconstruction error.", show_default=str(DEFAULTS.inversion.reconstruction).lower()),
    export: str | None = typer.Option(None, help="Comma-separated export formats written after the run: hf, webdataset.", show_default="none"),
    endpoint_url: str | None = typer.Option(None, help="S3-compatible endpoint URL for s3:// inputs and outputs.", show_default="AWS"),
    prefect: bool | None = typer.Option(None, "--prefect/--no-prefect", help="Run as a Prefect flow (tracking, UI, retries) or in this process; both write the same bytes.", show_default="Prefect when a server is configured (PREFECT_API_URL), else in this process"),
    strict: bool | None = typer.Option(None, "--strict/--no-strict", help="Refuse the whole run (exit 2) if any reference image is unusable, instead of skipping only the concepts whose references are bad (exit 1).", show_default="no: skip those concepts"),
    price_per_hour: float | None = typer.Option(None, "--price-per-hour", help="Price of one device per hour in USD, for run.json's cost per 1,000 images (cost.device_price_per_hour; not part of the run id).", show_default="not priced"),
    peak_tflops: float | None = typer.Option(None, "--peak-tflops", help="The device's peak TFLOP/s in the run's dtype, for MFU where normguide does not know it (CPUs, unlisted GPUs).", show_default="the vendor table on CUDA, none on CPU"),
    quick: bool = typer.Option(False, "--quick", metavar="", help="A quick look: 10 inversion and 10 generation steps, 4 images per concept and method, no reconstruction pass, into ./outputs-quick (options given here still override). The full default run takes a few times longer."),
    refine_overrides: dict | None = None,
) -> None:
    """Generate a dataset and print where it is and a summary."""
    from rich.console import Console

    console = Console()
    try:
        cfg = build_config(config, step_options(
            config, concepts, output, model, run_id, prompt_template, seed, methods, num_images, steps, guidance,
            inversion_steps, batch_size, reconstruction, endpoint_url,
            device=device, dtype=dtype, compile=compile, export=split(export), strict_references=strict,
            **{"generation.batch_invariant": batch_invariant, "inversion.batch_invariant": batch_invariant,
               "generation.batch_across_concepts": batch_across_concepts,
               "cost.device_price_per_hour": price_per_hour, "cost.peak_tflops": peak_tflops},
            **(refine_overrides or {})), quick=quick)
        from normguide.pipeline.context import read_table

        table = read_table(cfg)  # the run's one read of it: a missing one is named here
        cfg = cfg.pinned(table.digest)
    except ValueError as exc:
        raise fail(console, str(exc)) from None
    ids = list(split(concept_ids)) if concept_ids else None
    use_prefect = prefect_server_configured() if prefect is None else prefect
    # credentials may not become flow-run parameters (the Prefect API stores them in clear)
    if use_prefect and (secret_fields := cfg.inline_secrets()):
        from normguide.masking import secrets_refused

        raise fail(console, secrets_refused(secret_fields, "flow-run parameters"))

    from normguide.pipeline import output_root

    console.print(f"run [bold]{cfg.run_id}[/bold] -> {output_root(cfg)}", soft_wrap=True, highlight=False)
    with Interrupts(console, cfg):
        if use_prefect:  # the checks that need no model run here, before Prefect starts
            summary = checked(console, cfg, table, ids) or run_prefect(console, cfg, table, ids)
        else:  # the local driver runs the same checks first itself
            summary = run_local(console, cfg, table, ids)
    print_summary(console, summary)
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_FAILED)


def checked(console, cfg: RunConfig, table, ids):
    """The recipe's checks that need no model and no Prefect (output writable, same settings,
    table, references); returns the summary of a run that is already complete (its no-op run
    here, which writes a missing card or export), else None."""
    from normguide.pipeline import RunContext, steps
    from normguide.pipeline.recipe import LocalRunner, check_run, run_recipe

    try:
        runner = LocalRunner(RunContext.create(cfg, table=table))
        prepared, concepts, _ = check_run(runner, ids)
        if prepared.complete:
            return run_recipe(runner, ids)
        console.print(steps.outline(runner.ctx, concepts), highlight=False, soft_wrap=True)
    except BAD_INPUT as exc:
        raise fail(console, str(exc)) from None
    return None


def run_local(console, cfg: RunConfig, table, ids):
    import logging

    from normguide import progress
    from normguide.pipeline import run_dataset

    terminal = console.is_terminal
    logging.basicConfig(level=logging.WARNING if terminal else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reporter = progress_reporter(console)
    old = progress.set_reporter(reporter)
    try:
        with reporter:
            return run_dataset(cfg, concept_ids=ids, finalize=ids is None or is_whole_table(table, ids), table=table,
                               progress=lambda n, total, o: console.print(
                                   f"[{n}/{total}] {o.concept_id}: {o.status}, {o.images} image(s), "
                                   f"{o.generated} generated", highlight=False))
    except BAD_INPUT as exc:  # bad input or configuration
        raise fail(console, str(exc)) from None
    finally:
        progress.set_reporter(old)
