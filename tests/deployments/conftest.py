"""A real Prefect server and workers in subprocesses, for the deployment tests (fixture ``stack``).

``PrefectStack`` starts ``prefect server start`` on a free loopback port with its own
PREFECT_HOME and SQLite database under a temporary directory, runs ``prefect`` CLI commands
against it, and starts process workers. Every process gets its own process group, so
``close()`` stops the server, the workers and the flow-run subprocesses the workers started,
also when a test fails half-way. Logs stay in the directory for the failure message.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
PREFECT = str(Path(sys.executable).with_name("prefect"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrefectStack:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.home.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.procs: dict[str, subprocess.Popen] = {}
        self.env = self._env()

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_PROFILES_PATH=str(self.home / "profiles.toml"),
            PREFECT_API_URL=self.api_url,
            PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{self.home / 'prefect.db'}",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_SERVER_UI_ENABLED="false",
            PREFECT_CLI_PROMPT="false",
            # quick turnarounds: the scheduler creates the nightly runs right after deploy,
            # workers poll every second
            PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="2",
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_HEARTBEAT_SECONDS="5",
            PREFECT_LOGGING_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
            PYTHONPATH=str(REPO),
        )
        return env

    # -- processes -------------------------------------------------------------------------
    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.home / f"{name}.log", "wb")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(args, cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs[name] = proc
        return proc

    def start_server(self, timeout: float = 90.0) -> None:
        proc = self._spawn("server", [PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(self.port),
                                      "--no-ui", "--analytics-off"])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"prefect server exited with {proc.returncode}:\n{self.log('server')}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"prefect server not healthy after {timeout:g} s:\n{self.log('server')}")

    def start_worker(self, name: str, pool: str, *, queue: str | None = None, limit: int = 1) -> None:
        args = [PREFECT, "worker", "start", "--pool", pool, "--type", "process", "--name", name, "--limit", str(limit)]
        if queue:
            args += ["--work-queue", queue]
        self._spawn(name, args)

    def cli(self, *args: str, timeout: float = 180.0) -> str:
        """Run ``prefect <args>`` against the server; raise with its output on failure."""
        res = subprocess.run([PREFECT, *args], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout)
        if res.returncode != 0:
            raise AssertionError(f"prefect {' '.join(args)} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res.stdout

    def python(self, code: str, timeout: float = 180.0) -> str:
        """Run Python code in a fresh interpreter pointed at the server."""
        res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=self.env, capture_output=True, text=True,
                             timeout=timeout)
        if res.returncode != 0:
            raise AssertionError(f"python failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
        return res.stdout

    def log(self, name: str, tail: int = 6000) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def logs(self) -> str:
        return "\n".join(f"----- {n} -----\n{self.log(n, 3000)}" for n in self.procs)

    def close(self) -> None:
        """Stop workers first (and their flow-run subprocesses), then the server."""
        names = [n for n in self.procs if n != "server"] + (["server"] if "server" in self.procs else [])
        for name in names:
            proc = self.procs[name]
            if proc.poll() is None:
                with _suppress_missing():
                    os.killpg(proc.pid, signal.SIGTERM)
        for name in names:
            proc = self.procs[name]
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            # the whole group: flow-run subprocesses a worker left behind, server children
            with _suppress_missing():
                os.killpg(proc.pid, signal.SIGKILL)
            with _suppress_missing():
                proc.wait(timeout=10)

    # -- API -------------------------------------------------------------------------------
    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call; retried like Prefect's client does while SQLite is busy (503) or throttled (429)."""
        for attempt in range(8):
            r = httpx.request(method, f"{self.api_url}{path}", timeout=30, **kwargs)
            if r.status_code not in (429, 502, 503) or attempt == 7:
                break
            time.sleep(0.5 * 2**attempt if attempt < 4 else 4)
        r.raise_for_status()
        return r.json() if r.content else None

    def wait_for_flow_run(self, flow_run_id: str, timeout: float = 600.0) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            fr = self.api("GET", f"/flow_runs/{flow_run_id}")
            if fr["state"] and fr["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                return fr
            time.sleep(1)
        raise AssertionError(f"flow run {flow_run_id} not final after {timeout:g} s (state {fr['state']})\n{self.logs()}")


class _suppress_missing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        return exc_type is not None and issubclass(exc_type, (ProcessLookupError, PermissionError, subprocess.TimeoutExpired))


@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefect-home")
