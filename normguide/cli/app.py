"""The ``normguide`` Typer app and what its commands share: the version and ``--debug`` flags,
one-line errors, and building a run configuration from a file and options.

Each command lives in the module of its job (``run.py``, ``tables.py``, ``runs.py``,
``norm_response.py``); ``normguide.cli`` registers them all on :data:`app`.
"""

from __future__ import annotations

import functools
import inspect
import sys
from pathlib import Path

import typer

from normguide import __version__
from normguide.config import RefineConfig, RunConfig, load_config
from normguide.errors import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_INTERRUPTED

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  context_settings={"help_option_names": ["-h", "--help"]},
                  help="Synthetic image datasets from norm-guided diffusion seeds.")

#: whether ``--debug`` was given (tracebacks on errors)
DEBUG = {"on": False}
#: the defaults, for --help (constructing reads no table)
DEFAULTS = RunConfig.model_construct()


def _version(value: bool) -> None:
    if value:
        typer.echo(f"normguide {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool | None = typer.Option(None, "--version", callback=_version, is_eager=True, metavar="", help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", metavar="", help="Show tracebacks (and Prefect's own logs) on errors."),
) -> None:
    DEBUG["on"] = debug


def fail(console, message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    """Print one ``error:`` line (the traceback too with --debug) and return the exit to raise."""
    from rich.markup import escape

    if DEBUG["on"] and sys.exc_info()[0] is not None:
        console.print_exception()
    console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    return typer.Exit(code)


def build_config(config_file: Path | None, overrides: dict, quick: bool = False) -> RunConfig:
    """The run configuration: the defaults or ``config_file``, the quick preset on top when asked,
    then the options given (``overrides``: dotted paths; None leaves a value as it is)."""
    base = load_config(config_file) if config_file else RunConfig()
    if quick:  # the preset on top of the defaults (or the file), options given here on top of it
        from normguide.presets import QUICK

        base = base.with_overrides(**QUICK)
    return base.with_overrides(**overrides)


def step_options(config, concepts, output, model, run_id, prompt_template, seed, methods, num_images, steps,
                 guidance, inversion_steps, batch_size, reconstruction, endpoint_url, **more) -> dict:
    """The dotted-path overrides of the options `run` and `plan` share (same options, same run id)."""
    return {"concepts": concepts, "output": output, "model": model, "run_id": run_id,
            "prompt_template": prompt_template, "seed": seed,
            "plan.methods": split(methods), "plan.num_images": num_images,
            "generation.num_inference_steps": steps, "generation.guidance_scale": guidance,
            "inversion.num_inference_steps": inversion_steps,
            "generation.batch_size": batch_size, "inversion.batch_size": batch_size,
            "inversion.reconstruction": reconstruction, "storage.endpoint_url": endpoint_url, **more}


#: The refinement options of ``run`` and ``plan``: option parameter -> (``refine.`` field, its
#: type, the default shown in --help, extra typer.Option arguments). Their help is the field's
#: description; :func:`with_refine_options` adds them to a command.
REFINE_OPTIONS: dict[str, tuple[str, type, str, dict]] = {
    "refine": ("enabled", bool, "no", {"param_decls": ("--refine/--no-refine",)}),
    "refine_preset": ("preset", str, "auto", {}),
    "refine_iterations": ("iterations", int, "preset: 5 / 30", {}),
    "refine_lr": ("learning_rate", float, "preset: 0.05 / 0.1", {}),
    "refine_lr_decay_at": ("lr_decay_at", int, "3", {}),
    "refine_lr_decay_factor": ("lr_decay_factor", float, "0.1", {}),
    "refine_semantic_weight": ("semantic_weight", float, "10", {}),
    "refine_appearance_weight": ("appearance_weight", float, "1", {}),
    "refine_steps": ("num_inference_steps", int, "20", {}),
    "refine_guidance": ("guidance_scale", float, "preset: 1 / 7.5", {}),
    "refine_stop_below": ("stop_below", float, "never", {}),
    "refine_stop_tolerance": ("stop_tolerance", float, "never", {}),
    "feature_model": ("feature_model", str, "auto: the demo's autoencoder for the demo model", {}),
}


def refine_option(param: str):
    """The typer option of ``param`` (a key of :data:`REFINE_OPTIONS`), documented from its field."""
    field, _, shown, extra = REFINE_OPTIONS[param]
    return typer.Option(None, *extra.get("param_decls", ()), help=RefineConfig.model_fields[field].description,
                        show_default=shown, rich_help_panel="Refinement")


def with_refine_options(command):
    """``command`` with the refinement options of :data:`REFINE_OPTIONS` added to its command
    line (after its own); it receives them as one keyword, ``refine_overrides``: the dotted-path
    overrides of the options given (``refine.<field>`` -> value, None where not given)."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "refine_overrides"]
    added = [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, default=refine_option(p), annotation=kind | None)
             for p, (_, kind, _, _) in REFINE_OPTIONS.items()]

    @functools.wraps(command)
    def with_options(*args, **kwargs):
        overrides = {f"refine.{REFINE_OPTIONS[p][0]}": kwargs.pop(p, None) for p in REFINE_OPTIONS}
        return command(*args, refine_overrides=overrides, **kwargs)

    with_options.__signature__ = signature.replace(parameters=own + added)
    with_options.__annotations__ = {p.name: p.annotation for p in own + added} | {"return": signature.return_annotation}
    return with_options


def split(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated option as a tuple (None when not given)."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value else None


def main() -> None:  # pragma: no cover - console entry (tests run it as a process)
    """The console entry: unexpected errors print one line (``--debug``: the traceback), exit 1."""
    import normguide.cli  # noqa: F401 - registers every command on the app

    try:
        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as exc:
        if DEBUG["on"]:
            raise
        print(f"error: {type(exc).__name__}: {exc}\n(rerun with --debug for the traceback)", file=sys.stderr)
        sys.exit(EXIT_FAILED)
