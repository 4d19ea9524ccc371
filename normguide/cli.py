"""The ``normguide`` command.

``normguide run`` with no arguments runs the shipped example (inside the package) on the demo
model into ./outputs/. Without a Prefect server configured it runs in this process (the local
driver); with ``PREFECT_API_URL`` set (environment or Prefect profile), or ``--prefect``, the run
is a Prefect flow run tracked on that server (or on an ephemeral one Prefect starts).

Exit codes: 0 done (or nothing to do), 1 some concepts (or the evaluation) failed, 2 bad input or
configuration (nothing was generated), 130 interrupted (run.json says so; rerun to resume).
Errors print one line; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer
import yaml

from normguide import __version__
from normguide.errors import BAD_INPUT, EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, exit_code
from normguide.config import RunConfig, load_config
from normguide.data import layout

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Synthetic image datasets from norm-guided diffusion seeds.")

_DEBUG = {"on": False}
_D = RunConfig.model_construct()  # the defaults, for --help (constructing reads no table)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"normguide {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Optional[bool] = typer.Option(None, "--version", callback=_version, is_eager=True, metavar="", help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", metavar="", help="Show tracebacks (and Prefect's own logs) on errors."),
) -> None:
    _DEBUG["on"] = debug


def _fail(console, message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print one ``error:`` line (the traceback too with --debug) and return the exit to raise."""
    from rich.markup import escape

    if _DEBUG["on"] and sys.exc_info()[0] is not None:
        console.print_exception()
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def _build_config(config_file: Optional[Path], overrides: dict, quick: bool = False) -> RunConfig:
    base = load_config(config_file) if config_file else RunConfig()
    if quick:  # the preset on top of the defaults (or the file), options given here on top of it
        from normguide.presets import QUICK

        base = base.with_overrides(**QUICK)
    return base.with_overrides(**overrides)


def _step_options(config, concepts, output, model, run_id, prompt_template, seed, methods, num_images, steps,
                  guidance, inversion_steps, batch_size, reconstruction, endpoint_url, **more) -> dict:
    """The dotted-path overrides of the options `run` and `plan` share (same options, same run id)."""
    return {"concepts": concepts, "output": output, "model": model, "run_id": run_id,
            "prompt_template": prompt_template, "seed": seed,
            "plan.methods": _split(methods), "plan.num_images": num_images,
            "generation.num_inference_steps": steps, "generation.guidance_scale": guidance,
            "inversion.num_inference_steps": inversion_steps,
            "generation.batch_size": batch_size, "inversion.batch_size": batch_size,
            "inversion.reconstruction": reconstruction, "storage.endpoint_url": endpoint_url, **more}


def _split(value: Optional[str]) -> Optional[tuple[str, ...]]:
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def prefect_server_configured() -> bool:
    """Whether a Prefect API is configured (``PREFECT_API_URL`` in the environment or the active
    Prefect profile): then ``normguide run`` tracks the run there by default."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


@app.command()
def run(
    concepts: Optional[str] = typer.Option(None, help="Concept table (Parquet): a path or s3:// URI.", show_default="the shipped example (3 rare digits)"),
    output: Optional[str] = typer.Option(None, help="Output root (local dir or s3://bucket/prefix); the run writes under <output>/<run-id>/.", show_default=_D.output),
    model: Optional[str] = typer.Option(None, help="'demo', a local diffusers pipeline directory, or a hub id.", show_default=_D.model),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML or JSON run configuration; options given here override it."),
    run_id: Optional[str] = typer.Option(None, help="Run id.", show_default="derived from the settings and the table's content, so reruns resume"),
    concept_ids: Optional[str] = typer.Option(None, "--concept-ids", help="Comma-separated concept ids: run only these (no finalize unless they are the whole table).", show_default="all"),
    prompt_template: Optional[str] = typer.Option(None, help="Prompt for concepts without their own; {name} is the concept's name.", show_default=_D.prompt_template),
    seed: Optional[int] = typer.Option(None, help="Base seed of the random method.", show_default=str(_D.seed)),
    device: Optional[str] = typer.Option(None, help="cpu, cuda, cuda:N or auto.", show_default=_D.device),
    dtype: Optional[str] = typer.Option(None, help="float32, float16 or bfloat16 (half precision on CUDA).", show_default=_D.dtype),
    compile: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the UNet (GPU; fixed shapes, one warm-up).", show_default="no"),
    methods: Optional[str] = typer.Option(None, help="Comma-separated seed methods (`normguide methods` lists them).", show_default=",".join(_D.plan.methods)),
    num_images: Optional[int] = typer.Option(None, help="Images per concept and method.", show_default=str(_D.plan.num_images)),
    steps: Optional[int] = typer.Option(None, help="Generation (denoising) steps.", show_default=str(_D.generation.num_inference_steps)),
    guidance: Optional[float] = typer.Option(None, help="Generation guidance scale (1 to 100).", show_default=str(_D.generation.guidance_scale)),
    inversion_steps: Optional[int] = typer.Option(None, help="DDIM inversion steps.", show_default=str(_D.inversion.num_inference_steps)),
    batch_size: Optional[int] = typer.Option(None, help="Batch size for inversion and generation.", show_default=f"{_D.inversion.batch_size} / {_D.generation.batch_size}"),
    batch_invariant: Optional[bool] = typer.Option(None, "--batch-invariant/--no-batch-invariant", help="Run the models one sample at a time inside a batch (inversion and generation), so an image's bytes do not depend on its batch mates; slower (docs/determinism.md).", show_default="no: batched, as diffusers"),
    reconstruction: Optional[bool] = typer.Option(None, "--reconstruction/--no-reconstruction", help="Record each seed's reconstruction error.", show_default=str(_D.inversion.reconstruction).lower()),
    export: Optional[str] = typer.Option(None, help="Comma-separated export formats written after the run: hf, webdataset.", show_default="none"),
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint URL for s3:// inputs and outputs.", show_default="AWS"),
    prefect: Optional[bool] = typer.Option(None, "--prefect/--no-prefect", help="Run as a Prefect flow (tracking, UI, retries) or in this process; both write the same bytes.", show_default="Prefect when a server is configured (PREFECT_API_URL), else in this process"),
    strict: Optional[bool] = typer.Option(None, "--strict/--no-strict", help="Refuse the whole run (exit 2) if any reference image is unusable, instead of skipping only the concepts whose references are bad (exit 1).", show_default="no: skip those concepts"),
    quick: bool = typer.Option(False, "--quick", metavar="", help="A quick look: 10 inversion and 10 generation steps, 4 images per concept and method, no reconstruction pass, into ./outputs-quick (options given here still override). The full default run takes a few times longer."),
    refine: Optional[bool] = typer.Option(None, "--refine/--no-refine", help="SeedSelect-refine every planned seed before generation (docs/refinement.md).", show_default="no", rich_help_panel="Refinement"),
    refine_preset: Optional[str] = typer.Option(None, help="The paper's settings: nao, random, or auto (random seeds: random, others: nao).", show_default="auto", rich_help_panel="Refinement"),
    refine_iterations: Optional[int] = typer.Option(None, help="Optimisation iterations per seed.", show_default="preset: 5 / 30", rich_help_panel="Refinement"),
    refine_lr: Optional[float] = typer.Option(None, help="AdamW learning rate on the seed.", show_default="preset: 0.05 / 0.1", rich_help_panel="Refinement"),
    refine_lr_decay_at: Optional[int] = typer.Option(None, help="Iteration from which the learning rate is multiplied by --refine-lr-decay-factor.", show_default="3", rich_help_panel="Refinement"),
    refine_lr_decay_factor: Optional[float] = typer.Option(None, help="That factor (1 keeps the rate constant).", show_default="0.1", rich_help_panel="Refinement"),
    refine_semantic_weight: Optional[float] = typer.Option(None, help="Weight of the semantic (feature) loss.", show_default="10", rich_help_panel="Refinement"),
    refine_appearance_weight: Optional[float] = typer.Option(None, help="Weight of the appearance (latent) loss.", show_default="1", rich_help_panel="Refinement"),
    refine_steps: Optional[int] = typer.Option(None, help="DDIM steps of each refinement pass.", show_default="20", rich_help_panel="Refinement"),
    refine_guidance: Optional[float] = typer.Option(None, help="Guidance scale of the refinement passes.", show_default="preset: 1 / 7.5", rich_help_panel="Refinement"),
    refine_stop_below: Optional[float] = typer.Option(None, help="Stop a seed once its loss is at or below this.", show_default="never", rich_help_panel="Refinement"),
    refine_stop_tolerance: Optional[float] = typer.Option(None, help="Stop a seed once its loss improves by less than this fraction per iteration.", show_default="never", rich_help_panel="Refinement"),
    feature_model: Optional[str] = typer.Option(None, help="Feature model of the semantic loss: a local CLIP directory, or 'demo'.", show_default="auto: the demo's autoencoder for the demo model", rich_help_panel="Refinement"),
) -> None:
    """Generate a dataset and print where it is and a summary."""
    from rich.console import Console

    console = Console()
    try:
        cfg = _build_config(config, _step_options(
            config, concepts, output, model, run_id, prompt_template, seed, methods, num_images, steps, guidance,
            inversion_steps, batch_size, reconstruction, endpoint_url,
            device=device, dtype=dtype, compile=compile, export=_split(export), strict_references=strict,
            **{"generation.batch_invariant": batch_invariant, "inversion.batch_invariant": batch_invariant},
            **{"refine.enabled": refine, "refine.preset": refine_preset, "refine.iterations": refine_iterations,
               "refine.learning_rate": refine_lr, "refine.lr_decay_at": refine_lr_decay_at,
               "refine.lr_decay_factor": refine_lr_decay_factor, "refine.semantic_weight": refine_semantic_weight,
               "refine.appearance_weight": refine_appearance_weight, "refine.num_inference_steps": refine_steps,
               "refine.guidance_scale": refine_guidance, "refine.stop_below": refine_stop_below,
               "refine.stop_tolerance": refine_stop_tolerance, "refine.feature_model": feature_model}), quick=quick)
        from normguide.pipeline.context import read_table

        table = read_table(cfg)  # the run's one read of it: a missing one is named here
        cfg = cfg.pinned(table.digest)
    except ValueError as exc:
        raise _fail(console, str(exc)) from None
    ids = list(_split(concept_ids)) if concept_ids else None
    use_prefect = prefect_server_configured() if prefect is None else prefect
    # credentials may not become flow-run parameters (the Prefect API stores them in clear)
    if use_prefect and (secret_fields := cfg.inline_secrets()):
        from normguide.config import secrets_refused

        raise _fail(console, secrets_refused(secret_fields, "flow-run parameters"))

    from normguide.pipeline import output_root

    console.print(f"run [bold]{cfg.run_id}[/bold] -> {output_root(cfg)}", soft_wrap=True, highlight=False)
    with _interrupts(console, cfg):
        if use_prefect:  # the checks that need no model run here, before Prefect starts
            summary = _checked(console, cfg, table, ids) or _run_prefect(console, cfg, table, ids)
        else:  # the local driver runs the same checks first itself
            summary = _run_local(console, cfg, table, ids)
    _print_summary(console, summary)
    raise typer.Exit(EXIT_OK if summary.ok else EXIT_FAILED)


def _checked(console, cfg: RunConfig, table, ids):
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
        raise _fail(console, str(exc)) from None
    return None


def _progress_reporter(console):
    """Live bars on a terminal; one line per finished stage otherwise."""
    from normguide import progress

    if console.is_terminal:
        return RichReporter(console)
    return progress.LogReporter()


class RichReporter:
    """progress.Reporter: one live bar per running stage (concept, stage, done/total, rate)."""

    def __init__(self, console):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                              console=console, transient=True)
        self._ids: dict[int, object] = {}
        self._console = console

    def __enter__(self):
        self._bars.start()
        return self

    def __exit__(self, *exc):
        self._bars.stop()

    def note(self, text: str) -> None:
        self._console.print(text, highlight=False, soft_wrap=True)

    def started(self, stage) -> None:
        self._ids[id(stage)] = self._bars.add_task(f"{stage.concept_id} · {stage.name}", total=stage.total, rate="")

    def advanced(self, stage) -> None:
        rate = f"{stage.rate:.2f} {stage.unit}s/s" if stage.rate else ""
        self._bars.update(self._ids[id(stage)], completed=stage.done, rate=rate)

    def finished(self, stage, ok: bool) -> None:
        task = self._ids.pop(id(stage), None)
        if task is not None:
            self._bars.remove_task(task)
        if ok:
            self._console.print(f"  {stage.describe()}", highlight=False)


def _run_local(console, cfg: RunConfig, table, ids):
    import logging

    from normguide import progress
    from normguide.pipeline import run_dataset

    terminal = console.is_terminal
    logging.basicConfig(level=logging.WARNING if terminal else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    reporter = _progress_reporter(console)
    old = progress.set_reporter(reporter)
    try:
        with reporter:
            return run_dataset(cfg, concept_ids=ids, finalize=ids is None or _is_whole_table(table, ids), table=table,
                               progress=lambda n, total, o: console.print(
                                   f"[{n}/{total}] {o.concept_id}: {o.status}, {o.images} image(s), "
                                   f"{o.generated} generated", highlight=False))
    except BAD_INPUT as exc:  # bad input or configuration
        raise _fail(console, str(exc)) from None
    finally:
        progress.set_reporter(old)


def _is_whole_table(table, ids: list[str]) -> bool:
    return set(ids) >= set(table.ids())


def _run_prefect(console, cfg: RunConfig, table, ids):
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "normguide")
    # The ephemeral API's telemetry heartbeat races the run for its SQLite file at start-up and
    # prints a 'database is locked' traceback; a user's explicit setting still wins.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect waits 20 s for its ephemeral API by default; its first start also creates the
    # database, which takes longer than that on a busy laptop or CI box.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    # before the flow's imports (torch): an ephemeral server starts meanwhile, in the watchdog
    watchdog = _start_watchdog()
    from contextlib import nullcontext

    from prefect import tags
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, get_current_settings, temporary_settings

    from normguide.flows.generate_dataset import generate_dataset
    from normguide.pipeline import RunSummary

    finalize = ids is None or _is_whole_table(table, ids)
    api = nullcontext()
    if watchdog and watchdog.serving:  # the watchdog's ephemeral server; it serves no UI to link to
        settings = get_current_settings()
        try:
            startup = float(os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"])
        except (KeyError, ValueError):
            startup = 300.0
        url = watchdog.api_url(max(startup, settings.server.ephemeral.startup_timeout_seconds) + 30)
        api = temporary_settings({PREFECT_API_URL: url, **({} if settings.ui_url else {PREFECT_UI_URL: ""})})
    with api, tags(watchdog.tag) if watchdog else nullcontext():  # the tag: how the watchdog finds the run
        state = generate_dataset(config=cfg, concept_ids=ids, finalize=finalize, return_state=True)
        summary = state.result(raise_on_failure=False)
    if not isinstance(summary, RunSummary):  # the flow failed before it could summarise
        raise _fail(console, f"run failed: {summary}", exit_code(summary) if isinstance(summary, BaseException) else EXIT_FAILED)
    return summary


_WATCHDOG: dict = {}


def _start_watchdog():
    """Start this process's watchdog (normguide.prefect_watchdog): if this process dies without
    cleaning up (kill -9, the OOM killer), it marks the run's flow runs Crashed and stops the
    ephemeral API server. With no Prefect server configured, the watchdog runs that server (as
    Prefect would have, in this process) and this process uses its URL. It is told ``done`` at
    exit (after Prefect has sent its last logs) and ``interrupted`` on Ctrl-C (``_stop_children``)."""
    if os.name != "posix":  # process sessions and select() on pipes: POSIX only
        return None
    import atexit

    from prefect.settings import get_current_settings

    from normguide.prefect_watchdog import DONE, Watchdog

    watchdog = Watchdog.start(serve=not prefect_server_configured() and get_current_settings().server.ephemeral.enabled)
    _WATCHDOG["watchdog"] = watchdog
    atexit.register(watchdog.close, DONE)  # runs after Prefect's own exit hooks (they drain its logs)
    return watchdog


class _interrupts:
    """Ctrl-C (and SIGTERM): stop within seconds, mark run.json ``interrupted``, print one line,
    exit 130. A second Ctrl-C exits at once."""

    def __init__(self, console, cfg: RunConfig):
        self.console, self.cfg = console, cfg

    def __enter__(self):
        import signal

        self._old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
        self.terminated = False

        def on_term(*_):
            self.terminated = True
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, on_term)
        return self

    def __exit__(self, exc_type, exc, tb):
        import signal

        for s, h in self._old.items():
            signal.signal(s, h)
        if exc_type is not KeyboardInterrupt:
            return False
        signal.signal(signal.SIGINT, lambda *_: os._exit(EXIT_INTERRUPTED))  # a second Ctrl-C: now
        from normguide.pipeline import RunContext, steps

        why = "terminated (SIGTERM)" if self.terminated else "interrupted by the user (Ctrl-C)"
        steps.record_status(RunContext.create(self.cfg), "interrupted", error=why)
        label = "terminated (SIGTERM)" if self.terminated else "interrupted"
        self.console.print(f"[yellow]{label}:[/yellow] run {self.cfg.run_id} stopped; run.json says "
                           "'interrupted'; rerun the same command to resume", highlight=False, soft_wrap=True)
        _stop_children()
        sys.stdout.flush()
        sys.stderr.flush()
        # in-flight worker threads (a batch being generated, Prefect's runners) are not waited for
        os._exit(EXIT_INTERRUPTED)


def _stop_children() -> None:
    """Stop Prefect's ephemeral API server, so none is orphaned: the watchdog's (told the run was
    interrupted, it also marks what of the run is not final Crashed), or one Prefect started in
    this process."""
    watchdog = _WATCHDOG.pop("watchdog", None)
    if watchdog is not None:
        from normguide.prefect_watchdog import INTERRUPTED

        watchdog.close(INTERRUPTED, timeout=15)
    server = sys.modules.get("prefect.server.api.server")
    if server is None:
        return
    for instance in list(server.SubprocessASGIServer._instances.values()):
        try:
            instance.stop()
        except Exception:  # noqa: BLE001, S110 - on the way out; nothing better to do
            pass


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
    for fmt, uri in summary.exports.items():
        console.print(f"export {fmt}: {uri}", soft_wrap=True, highlight=False)
    if summary.card_uri:
        console.print(f"dataset card: {summary.card_uri} (contact sheets under report/)", soft_wrap=True, highlight=False)
    if summary.report_error:
        console.print(f"[red]exports/report failed:[/red] {escape(summary.report_error)}", soft_wrap=True, highlight=False)
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
        cfg, store = existing_run(run_uri, endpoint_url)
        cfg = cfg.with_overrides(**{"evaluation.clip_model": clip_model, "evaluation.real_test": real_test,
                                    "evaluation.judge": "clip" if clip_model else None})
        record = steps.evaluate(RunContext.create(cfg, storage=store))
    except (ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True, highlight=False)
        raise typer.Exit(2) from None
    _print_evaluation(console, record)


def existing_run(run_uri: str, endpoint_url: Optional[str]):
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
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint URL.", show_default="AWS"),
    references: bool = typer.Option(True, "--references/--no-references", help="Also read and decode every reference image."),
    model: str = typer.Option(_D.model, help="The model the table is meant for: its tokenizer is read (no weights) to warn of prompt words it does not know; for the demo, of concepts that are not digits."),
    prompt_template: str = typer.Option(_D.prompt_template, help="Prompt for concepts without their own; {name} is the concept's name."),
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
        raise _fail(console, f"concepts: concept table {concepts!r} does not exist ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise _fail(console, str(exc)) from None
    for c in rows:
        typer.echo(f"{c.concept_id}\t{c.name}\t{len(c.reference_uris)} reference(s)")
    from normguide.vocabulary import drawing_warnings

    warnings = drawing_warnings(model, rows, prompt_template)
    for line in warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(line)}", soft_wrap=True, highlight=False)
    typer.echo(f"{len(rows)} concept(s) OK" + ("" if references else " (reference images not read)")
               + (f", {len(warnings)} warning(s): the model may not draw what they ask (see above)" if warnings else ""))


@app.command("plan")
def plan_command(
    concepts: Optional[str] = typer.Option(None, help="Concept table (Parquet): a path or s3:// URI.", show_default="the shipped example"),
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="YAML or JSON run configuration."),
    output: Optional[str] = typer.Option(None, help="Output root, as for `run`.", show_default=_D.output),
    model: Optional[str] = typer.Option(None, help="Model, as for `run`.", show_default=_D.model),
    run_id: Optional[str] = typer.Option(None, help="Run id.", show_default="derived as `run` derives it"),
    prompt_template: Optional[str] = typer.Option(None, help="Prompt for concepts without their own.", show_default=_D.prompt_template),
    methods: Optional[str] = typer.Option(None, help="Comma-separated seed methods.", show_default=",".join(_D.plan.methods)),
    num_images: Optional[int] = typer.Option(None, help="Images per concept and method.", show_default=str(_D.plan.num_images)),
    steps: Optional[int] = typer.Option(None, help="Generation (denoising) steps.", show_default=str(_D.generation.num_inference_steps)),
    guidance: Optional[float] = typer.Option(None, help="Generation guidance scale.", show_default=str(_D.generation.guidance_scale)),
    inversion_steps: Optional[int] = typer.Option(None, help="DDIM inversion steps.", show_default=str(_D.inversion.num_inference_steps)),
    batch_size: Optional[int] = typer.Option(None, help="Batch size for inversion and generation.", show_default=f"{_D.inversion.batch_size} / {_D.generation.batch_size}"),
    reconstruction: Optional[bool] = typer.Option(None, "--reconstruction/--no-reconstruction", help="Record each seed's reconstruction error.", show_default=str(_D.inversion.reconstruction).lower()),
    concept_ids: Optional[str] = typer.Option(None, "--concept-ids", help="Comma-separated concept ids.", show_default="all"),
    seed: Optional[int] = typer.Option(None, help="Base seed of the random method.", show_default=str(_D.seed)),
    endpoint_url: Optional[str] = typer.Option(None, help="S3-compatible endpoint URL.", show_default="AWS"),
    quick: bool = typer.Option(False, "--quick", metavar="", help="Plan the quick look of `run --quick`."),
) -> None:
    """Dry run: print the seed plan per concept (methods, images, t values, expected seed
    z-scores) without inverting or generating anything.

    Expected z-scores come from planning with N(0, I) stand-ins for the inverted seeds (one per
    reference, the model's seed shape): real inversions differ, and `run` records those."""
    from rich.console import Console
    from rich.table import Table

    from normguide.pipeline import RunContext
    from normguide.pipeline import steps as run_steps

    console = Console()
    try:
        cfg = _build_config(config, _step_options(
            config, concepts, output, model, run_id, prompt_template, seed, methods, num_images, steps, guidance,
            inversion_steps, batch_size, reconstruction, endpoint_url), quick=quick)
        ctx = RunContext.create(cfg)
        rows = run_steps.load_concepts(ctx, list(_split(concept_ids)) if concept_ids else None)
        shape = _seed_shape(cfg)
    except (ValueError, FileNotFoundError) as exc:
        raise _fail(console, str(exc)) from None
    plans = _dry_plans(cfg, rows, shape)
    console.print(f"run {ctx.run_id} -> {ctx.storage.root}: {len(rows)} concept(s), "
                  f"seed shape {tuple(shape)}; nothing is written", highlight=False, soft_wrap=True)
    total = 0
    if len(plans) > _PLAN_TABLES:  # many concepts: one table per distinct plan (printing is the cost)
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
    _print_existing(console, ctx, rows)


def _print_existing(console, ctx, concepts) -> None:
    """What a run would do with what the output already holds: concepts done, still to make, or
    made again because their row in the table changed (read-only)."""
    from normguide.pipeline import steps

    try:
        if not ctx.storage.exists(layout.RUN_JSON):
            return
        states = steps.part_states(ctx, concepts)
    except (ValueError, OSError) as exc:
        console.print(f"(could not read the existing run: {exc})", highlight=False, soft_wrap=True)
        return
    done = sum(st == [] for st in states.values())
    missing = sum(st is None for st in states.values())
    changed = {cid: st for cid, st in states.items() if st}
    line = f"existing run: {done} concept(s) done, {missing} to generate"
    if changed:
        line += f", {len(changed)} changed since (made again): " + "; ".join(
            f"{c} ({', '.join(cols)})" for c, cols in changed.items())
    console.print(line, highlight=False, soft_wrap=True)


def _seed_shape(cfg: RunConfig) -> tuple[int, int, int]:
    """The model's seed shape, from a local pipeline's unet config when there is one (no
    weights loaded; the shipped demo's too, which spares importing diffusers), else from loading
    the model."""
    from normguide.diffusion.loading import trained_demo_dir

    path = trained_demo_dir() if cfg.model == "demo" else Path(cfg.model)
    unet = path / "unet" / "config.json"
    if unet.is_file():
        conf = json.loads(unet.read_text())
        size = conf.get("sample_size", 64)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (int(conf.get("in_channels", 4)), int(h), int(w))
    from normguide.diffusion import get_pipeline

    return tuple(get_pipeline(cfg.model, device="cpu", dtype="float32").seed_shape)


#: Above this many concepts, ``plan`` prints one table per distinct plan instead of one per concept.
_PLAN_TABLES = 50


def _dry_plans(cfg: RunConfig, concepts, shape):
    """Per concept, rows (method, kind, count, t values, pairs, z range) of the seed plan made
    from N(0, I) stand-ins for its inverted seeds (the geometry once per reference count)."""
    from normguide.data.dry_plan import dry_plans

    return dry_plans(cfg, concepts, shape)


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


def _register_commands() -> None:
    """``export`` and ``show`` live beside what they drive (their modules import nothing heavy)."""
    from normguide.export.cli import export_command
    from normguide.pipeline.norm_response import norm_response_command
    from normguide.reporting.cli import show_command, verify_command

    app.command("export")(export_command)
    app.command("show")(show_command)
    app.command("norm-response")(norm_response_command)
    app.command("verify")(verify_command)


_register_commands()


def main() -> None:  # pragma: no cover - console entry (tests run it as a process)
    """The console entry: unexpected errors print one line (``--debug``: the traceback), exit 1."""
    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one message, no traceback
        if _DEBUG["on"]:
            raise
        print(f"error: {type(exc).__name__}: {exc}\n(rerun with --debug for the traceback)", file=sys.stderr)
        sys.exit(EXIT_FAILED)


if __name__ == "__main__":  # pragma: no cover
    main()
