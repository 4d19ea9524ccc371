"""A watchdog for ``normguide run --prefect``: a killed CLI leaves no Prefect server behind and no
flow run stuck in Running.

``kill -9`` (or the OOM killer) runs nothing of the process it kills, so the clean-up has to live
in another process. :meth:`Watchdog.start` starts one (``python -m normguide.cli.watchdog``)
in a session of its own (a terminal's Ctrl-C, or the hang-up of a closed terminal, does not
reach it) and keeps a pipe to its stdin:

- With no Prefect server configured, the watchdog starts Prefect's ephemeral API server itself
  (``SubprocessASGIServer``, as Prefect would have in the CLI) and answers ``api <url>``; the CLI
  runs the flow against that URL. The server is the watchdog's child, in the watchdog's process
  group, so the watchdog can always stop it, and all of its children.
- The CLI runs its flow under a tag unique to the CLI process (:attr:`Watchdog.tag`: host, pid
  and a random part), so the watchdog can find the CLI's flow runs (subflows included) and no
  other process's, however many CLIs share a server or a Prefect home.
- At a clean exit the CLI writes ``done``: the watchdog stops the server (if it runs one) and
  exits. After Ctrl-C or SIGTERM it writes ``interrupted``. When the pipe ends without either
  (EOF: the CLI died), or after ``interrupted``, the watchdog marks the tag's flow runs (and their
  task runs) that are not in a final state Crashed, with a message naming the CLI's pid, then
  stops the server and exits. Every step has a time limit: the watchdog never outlives its CLI by
  more than about a minute.

This module imports nothing from Prefect at import time; the watchdog process imports it only to
serve the API or to mark runs Crashed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time

DONE, INTERRUPTED = "done", "interrupted"
#: how long the watchdog may take to mark the CLI's runs Crashed (a configured server that does
#: not answer is given up on after this)
CRASH_TIMEOUT_S = 45.0
#: how long the server gets to stop on SIGTERM before it is killed
STOP_GRACE_S = 5.0


def cli_tag(pid: int | None = None) -> str:
    """The tag of one CLI process's Prefect runs: ``normguide-cli-<host>-<pid>-<random>``."""
    return f"normguide-cli-{socket.gethostname()}-{pid or os.getpid()}-{secrets.token_hex(3)}"


# -- the CLI's side -----------------------------------------------------------------------------
class Watchdog:
    """The CLI's handle on its watchdog process (see the module docstring)."""

    def __init__(self, proc: subprocess.Popen, tag: str, serving: bool) -> None:
        self.proc, self.tag, self.serving = proc, tag, serving
        self._api_url: str | None = None
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def start(cls, *, serve: bool) -> Watchdog:
        """Start the watchdog of this process; with ``serve`` it starts Prefect's ephemeral API
        server (:meth:`api_url` waits for its URL), so the server starts while this process
        goes on (importing the flow, torch)."""
        tag = cli_tag()
        args = [sys.executable, "-m", "normguide.cli.watchdog", "--cli-pid", str(os.getpid()), "--tag", tag]
        proc = subprocess.Popen(args + (["--serve"] if serve else []), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=None, start_new_session=True)
        return cls(proc, tag, serve)

    def api_url(self, timeout: float) -> str:
        """The ephemeral server's API URL, once it answers (up to ``timeout`` seconds; the watchdog
        itself gives up after Prefect's startup timeout). RuntimeError saying why it did not start."""
        if self._api_url is None:
            self._api_url = self._read_api_url(timeout)
        return self._api_url

    def _read_api_url(self, timeout: float) -> str:
        fd = self.proc.stdout.fileno()
        buf = b""
        deadline = time.monotonic() + timeout
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"Prefect's ephemeral API server did not start within {timeout:.0f} s")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(fd, 4096)
                if not chunk:
                    try:
                        code = self.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        code = "unknown"
                    raise RuntimeError(f"the Prefect watchdog process exited (code {code}) before the "
                                       "ephemeral API server started")
                buf += chunk
        line = buf.split(b"\n", 1)[0].decode(errors="replace").strip()
        kind, _, rest = line.partition(" ")
        if kind != "api":
            raise RuntimeError(rest or line)
        return rest

    def close(self, message: str = DONE, timeout: float = 20.0) -> None:
        """Tell the watchdog how the CLI ends (``done`` or ``interrupted``) and wait up to
        ``timeout`` for it to finish (crash what is left of the run, stop the server). One that
        runs a server is killed after that, with its process group (the server); one that does
        not is left to finish (it gives up on its own). Safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.write(f"{message}\n".encode())
            self.proc.stdin.flush()
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdout.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            if not self.serving:
                return
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        if self.serving:  # a server left by a watchdog that died: its group outlives it
            with contextlib.suppress(OSError):
                os.killpg(self.proc.pid, signal.SIGKILL)


# -- the watchdog process -----------------------------------------------------------------------
def _log(message: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        print(f"normguide watchdog: {message}", file=sys.stderr, flush=True)


def _in_thread(fn, timeout: float):
    """``fn()`` in a daemon thread, waited for up to ``timeout``: (finished, result or exception)."""
    out: dict = {}

    def target() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the caller
            out["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        return False, None
    return True, out.get("error", out.get("result"))


def crash_runs(tag: str, message: str, api_url: str | None = None) -> list[str]:
    """Mark the flow runs tagged ``tag`` that are not in a final state, and their task runs that
    are not, Crashed (forced); returns the flow runs' names."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.states import Crashed

    unfinished = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]
    settings = temporary_settings({PREFECT_API_URL: api_url}) if api_url else contextlib.nullcontext()
    names = []
    with settings, get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=[tag]), state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished))))
        for run in runs:
            client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            names.append(run.name)
        if runs:
            tasks = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[r.id for r in runs])),
                task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=unfinished))))
            for task in tasks:
                client.set_task_run_state(task.id, Crashed(message=message), force=True)
    return names


def _group_members() -> list[int]:
    """The other live processes of this process group (the server and anything it started)."""
    me, group = os.getpid(), os.getpgrp()
    members = []
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == me:
                continue
            try:
                with open(f"/proc/{name}/stat") as fh:
                    raw = fh.read()
            except OSError:
                continue
            fields = raw[raw.rindex(")") + 2:].split()
            if int(fields[2]) == group and fields[0] not in ("Z", "X"):
                members.append(int(name))
    return members


def _stop_server(server) -> None:
    """Stop the ephemeral server (SIGTERM, SIGKILL after a grace period), then kill anything
    left in this process group (the watchdog leads it: only the server and its children are in
    it)."""
    proc = getattr(server, "server_process", None) if server is not None else None
    if proc is not None and proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.terminate()
        try:
            proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(OSError):
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
    if server is not None:
        with contextlib.suppress(Exception):
            server.stop()  # Prefect's own bookkeeping; the process is gone by now
    if os.getpgrp() == os.getpid():  # never kill a group this process does not lead
        for pid in _group_members():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _read_commands(stream, commands: queue.Queue[str | None]) -> None:
    """The CLI's messages, line by line, then None at EOF (the CLI ended, one way or another)."""
    try:
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace").strip()
            if line:
                commands.put(line)
    except (OSError, ValueError):
        pass
    commands.put(None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m normguide.cli.watchdog", description=__doc__.split("\n")[0])
    parser.add_argument("--cli-pid", type=int, required=True, help="the normguide CLI process watched")
    parser.add_argument("--tag", required=True, help="the tag of the CLI's Prefect runs")
    parser.add_argument("--serve", action="store_true", help="start Prefect's ephemeral API server and answer its URL")
    args = parser.parse_args(argv)

    # the pipes to the CLI stay private: the server gets /dev/null as stdin, stderr as stdout
    commands_in = os.fdopen(os.dup(0), "rb", buffering=0)
    reply_fd = os.dup(1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    # SIGTERM (or SIGHUP) to the watchdog itself: stop the server on the way out
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda *_: (_ for _ in ()).throw(SystemExit(1)))
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    commands: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_commands, args=(commands_in, commands), daemon=True).start()
    server = None
    try:
        if args.serve:
            from prefect.server.api.server import SubprocessASGIServer

            with contextlib.suppress(Exception):  # its "Starting/Stopping temporary server" lines
                from prefect.logging.configuration import ensure_logging_setup

                ensure_logging_setup()
            server = SubprocessASGIServer()
            failure: list[BaseException] = []

            def start() -> None:
                try:
                    server.start()
                except BaseException as exc:  # noqa: BLE001 - answered to the CLI
                    failure.append(exc)

            started = threading.Thread(target=start, daemon=True)
            started.start()
            while started.is_alive():
                started.join(0.2)
                if not commands.empty():  # the CLI ended (or was interrupted) while the server started
                    return 0
            if failure or not server.running:
                why = " ".join(str(failure[0]).split()) if failure else "it did not answer"
                _reply(reply_fd, f"error Prefect's ephemeral API server did not start: {why}")
                return 1
            _reply(reply_fd, f"api {server.api_url}")
        else:
            os.close(reply_fd)
        message = commands.get()
        if message == DONE:
            return 0
        how = ("was interrupted (Ctrl-C or SIGTERM)" if message == INTERRUPTED
               else "was killed (kill -9, the out-of-memory killer, a closed terminal)")
        note = (f"the normguide CLI process (pid {args.cli_pid} on {socket.gethostname()}) {how} before its flow "
                "run finished; rerun the same command to resume")
        finished, result = _in_thread(lambda: crash_runs(args.tag, note, server.api_url if server else None),
                                      CRASH_TIMEOUT_S)
        if not finished:
            _log(f"could not mark the flow runs of pid {args.cli_pid} Crashed within {CRASH_TIMEOUT_S:.0f} s")
        elif isinstance(result, BaseException):
            _log(f"could not mark the flow runs of pid {args.cli_pid} Crashed: {type(result).__name__}: {result}")
        elif result:
            _log(f"the normguide CLI (pid {args.cli_pid}) {how.split(' (')[0]} before its flow run finished: "
                 f"marked {', '.join(repr(n) for n in result)} Crashed")
        return 0
    finally:
        if server is not None:
            _stop_server(server)


def _reply(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, f"{line}\n".encode())
    with contextlib.suppress(OSError):
        os.close(fd)


if __name__ == "__main__":
    sys.exit(main())
