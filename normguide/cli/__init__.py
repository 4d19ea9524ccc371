"""The ``normguide`` command.

``normguide run`` with no arguments runs the shipped example (inside the package) on the demo
model into ./outputs/. Without a Prefect server configured it runs in this process (the local
driver); with ``PREFECT_API_URL`` set (environment or Prefect profile), or ``--prefect``, the run
is a Prefect flow run tracked on that server (or on an ephemeral one Prefect starts).

Exit codes: 0 done (or nothing to do), 1 some concepts (or the evaluation) failed, 2 bad input or
configuration (nothing was generated), 130 interrupted (run.json says so; rerun to resume).
Errors print one line; ``--debug`` adds the traceback.

The package, one module per job:

    app.py              the Typer app, --version/--debug, one-line errors, building a config
    run.py              ``run``: the local driver or a Prefect flow run
    prefect_process.py  Prefect: server detection, the flow call, Ctrl-C/SIGTERM, child processes
    watchdog.py         the process that cleans up after a killed ``run --prefect``
    tables.py           ``validate``, ``plan``, ``methods``, ``config`` (nothing generated)
    runs.py             ``evaluate``, ``export``, ``show``, ``verify`` (an existing run)
    norm_response.py    ``norm-response``
    console.py          what the commands print (progress, summary, evaluation)

``--help`` imports no torch, diffusers, transformers or Prefect (``tests/cli/test_imports.py``):
each command imports what it drives when it runs.
"""

from __future__ import annotations

# each module registers its commands on the app, in the order --help lists them
from normguide.cli import run, tables, runs, norm_response  # noqa: F401, I001
from normguide.cli.app import app, main

__all__ = ["app", "main"]
