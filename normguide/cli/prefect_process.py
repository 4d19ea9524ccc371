"""Running a run as a Prefect flow run from the command line: whether a server is configured, the
flow call (on an ephemeral API the watchdog serves when none is), Ctrl-C and SIGTERM, and
stopping Prefect's child processes so none is orphaned (``watchdog.py``)."""

from __future__ import annotations

import os
import sys

from normguide.cli.app import fail
from normguide.config import RunConfig
from normguide.errors import EXIT_FAILED, EXIT_INTERRUPTED, exit_code


def prefect_server_configured() -> bool:
    """Whether a Prefect API is configured (``PREFECT_API_URL`` in the environment or the active
    Prefect profile): then ``normguide run`` tracks the run there by default."""
    if os.environ.get("PREFECT_API_URL"):
        return True
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def is_whole_table(table, ids: list[str]) -> bool:
    return set(ids) >= set(table.ids())


def run_prefect(console, cfg: RunConfig, table, ids):
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "normguide")
    # The ephemeral API's telemetry heartbeat races the run for its SQLite file at start-up and
    # prints a 'database is locked' traceback; a user's explicit setting still wins.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect waits 20 s for its ephemeral API by default; its first start also creates the
    # database, which takes longer than that on a busy laptop or CI box.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "300")
    # before the flow's imports (torch): an ephemeral server starts meanwhile, in the watchdog
    watchdog = start_watchdog()
    from contextlib import nullcontext

    from prefect import tags
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, get_current_settings, temporary_settings

    from normguide.flows.generate_dataset import generate_dataset
    from normguide.pipeline import RunSummary

    finalize = ids is None or is_whole_table(table, ids)
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
        raise fail(console, f"run failed: {summary}", exit_code(summary) if isinstance(summary, BaseException) else EXIT_FAILED)
    return summary


_WATCHDOG: dict = {}


def start_watchdog():
    """Start this process's watchdog (normguide.cli.watchdog): if this process dies without
    cleaning up (kill -9, the OOM killer), it marks the run's flow runs Crashed and stops the
    ephemeral API server. With no Prefect server configured, the watchdog runs that server (as
    Prefect would have, in this process) and this process uses its URL. It is told ``done`` at
    exit (after Prefect has sent its last logs) and ``interrupted`` on Ctrl-C (``_stop_children``)."""
    if os.name != "posix":  # process sessions and select() on pipes: POSIX only
        return None
    import atexit

    from prefect.settings import get_current_settings

    from normguide.cli.watchdog import DONE, Watchdog

    watchdog = Watchdog.start(serve=not prefect_server_configured() and get_current_settings().server.ephemeral.enabled)
    _WATCHDOG["watchdog"] = watchdog
    atexit.register(watchdog.close, DONE)  # runs after Prefect's own exit hooks (they drain its logs)
    return watchdog


class Interrupts:
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
        stop_children()
        sys.stdout.flush()
        sys.stderr.flush()
        # in-flight worker threads (a batch being generated, Prefect's runners) are not waited for
        os._exit(EXIT_INTERRUPTED)


def stop_children() -> None:
    """Stop Prefect's ephemeral API server, so none is orphaned: the watchdog's (told the run was
    interrupted, it also marks what of the run is not final Crashed), or one Prefect started in
    this process."""
    watchdog = _WATCHDOG.pop("watchdog", None)
    if watchdog is not None:
        from normguide.cli.watchdog import INTERRUPTED

        watchdog.close(INTERRUPTED, timeout=15)
    server = sys.modules.get("prefect.server.api.server")
    if server is None:
        return
    for instance in list(server.SubprocessASGIServer._instances.values()):
        try:
            instance.stop()
        except Exception:  # noqa: BLE001, S110 - on the way out; nothing better to do
            pass
