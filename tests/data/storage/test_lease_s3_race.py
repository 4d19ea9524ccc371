"""Of runs that race for an S3 output root's lease, exactly one gets it (issue 12, S3 side).

The lease on S3 is atomic only because S3 decides a conditional put (``If-None-Match: *`` to
create, ``If-Match: <etag>`` to take over) and the write together. moto's normal server
(``python -m moto.server``, the ``s3_server`` fixture) handles requests on threads and checks
the condition and stores the object as two steps with nothing held in between, so two
concurrent creates can both succeed there: a race test against it would fail for moto's sake.
These tests run moto on loopback single-threaded instead (``tests/moto_serial.py``: each
request, check and write, handled whole before the next, as a real S3 endpoint decides it),
with IAM authentication on like ``s3_server``, and the credentials in the environment.

Racers are long-lived processes (imports paid once), each blocked reading its stdin: the test
writes the round's lease name to all of them at once (the barrier), each tries
``acquire_lease`` once without waiting and answers one JSON line. Rounds: fresh leases, then a
takeover of an expired lease, then a takeover of a lease whose holder was SIGKILLed.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from normguide.data.storage import Storage
from normguide.data.storage.lease import read_holders
from tests.conftest import _BOOTSTRAP_ACTIONS, S3Server, _stop_process, _wait_for_port

_TESTS = Path(__file__).resolve().parents[2]
RACERS = 6
FRESH_ROUNDS = 5
TIMEOUT_S = 120.0  # generous: a loaded 2-core machine; nothing here asserts on timing


class SerialS3Server(S3Server):
    """moto's S3 served single-threaded (tests/moto_serial.py), IAM authentication on, no
    stoppable front: ``endpoint_url`` is the server itself."""

    def launch(self) -> None:
        env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT=str(_BOOTSTRAP_ACTIONS))
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            env.pop(name, None)
        log = open(os.path.join(self._log_dir, "moto_serial.log"), "wb")  # noqa: SIM115 - lives with the process
        self._backend = subprocess.Popen(
            [sys.executable, str(_TESTS / "moto_serial.py"), "-H", "127.0.0.1", "-p", str(self.backend_port)],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )
        _wait_for_port(self.backend_port, self._backend, "moto server (single-threaded)", timeout=TIMEOUT_S)
        self._bootstrap_credentials()
        self.port = self.backend_port
        self.endpoint_url = f"http://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self._backend is not None and self._backend.poll() is None

    def start(self) -> None:  # no front to bring up
        if not self.running:
            raise RuntimeError("the single-threaded moto server is not running")


@pytest.fixture(scope="module")
def serial_s3_server() -> Iterator[SerialS3Server]:
    with tempfile.TemporaryDirectory(prefix="normguide-moto-serial-") as log_dir:
        server = SerialS3Server(log_dir)
        try:
            server.launch()
            yield server
        finally:
            server.close()


#: A racer: opens the root (credentials from the environment), warms its client, says "ready";
#: then for each lease name read from stdin tries acquire_lease once and answers a JSON line.
RACER = textwrap.dedent("""
    import json, os, sys
    from normguide.config import StorageConfig
    from normguide.data.storage import LeaseHeld, Storage
    root, endpoint, label = sys.argv[1], sys.argv[2], sys.argv[3]
    st = Storage.open(root, storage_config=StorageConfig(endpoint_url=endpoint, region_name="us-east-1"),
                      retry_seconds=30)
    st.exists("warm-up")  # client made, credentials resolved, before the barrier
    print("ready", flush=True)
    held = []
    for line in sys.stdin:
        name = line.strip()
        out = {"label": label, "pid": os.getpid()}
        try:
            held.append(st.acquire_lease(name, ttl_s=300, owner=label, auto_renew=False))
            out["got"] = True
        except LeaseHeld as exc:
            out.update(got=False, holder_pid=exc.info.pid, holder_label=exc.info.label, message=str(exc))
        except Exception as exc:
            out.update(got=None, error=repr(exc))
        print(json.dumps(out), flush=True)
""")


class Racers:
    """RACERS racer processes and their output lines (a reader thread each: no blocking reads)."""

    def __init__(self, root: str, endpoint: str, env: dict[str, str]) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", RACER, root, endpoint, f"racer-{i}"],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
                      for i in range(RACERS)]
        self.lines: list[queue.Queue[str | None]] = []
        for proc in self.procs:
            q: queue.Queue[str | None] = queue.Queue()
            threading.Thread(target=self._pump, args=(proc, q), daemon=True).start()
            self.lines.append(q)

    @staticmethod
    def _pump(proc: subprocess.Popen, q: queue.Queue) -> None:
        for line in proc.stdout:
            q.put(line.strip())
        q.put(None)  # the racer exited

    def _next(self, i: int) -> str:
        try:
            line = self.lines[i].get(timeout=TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"racer-{i} said nothing within {TIMEOUT_S:g} s") from None
        assert line is not None, f"racer-{i} exited with code {self.procs[i].wait(timeout=10)}"
        return line

    def wait_ready(self) -> None:
        for i in range(RACERS):
            assert self._next(i) == "ready"

    def race(self, name: str) -> list[dict]:
        """All racers try to take lease ``name`` at once; their answers, in racer order."""
        for proc in self.procs:  # every racer is blocked reading stdin: this is the barrier
            proc.stdin.write(name + "\n")
        for proc in self.procs:
            proc.stdin.flush()
        return [json.loads(self._next(i)) for i in range(RACERS)]

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)


def _exactly_one_wins(st: Storage, name: str, answers: list[dict]) -> dict:
    assert not [a for a in answers if a["got"] is None], answers  # no racer failed otherwise
    winners = [a for a in answers if a["got"]]
    assert len(winners) == 1, f"{len(winners)} racers got lease {name}: {answers}"
    winner = winners[0]
    for loser in (a for a in answers if not a["got"]):  # refused, naming the winner
        assert (loser["holder_pid"], loser["holder_label"]) == (winner["pid"], winner["label"]), answers
        assert st.uri(name) in loser["message"] and winner["label"] in loser["message"]
    stored = read_holders(st, name)  # and the lease object is the winner's alone
    assert [(h.pid, h.label) for h in stored] == [(winner["pid"], winner["label"])]
    return winner


@pytest.mark.slow  # the slow tier (pyproject.toml): a server and racer processes
def test_of_racing_processes_exactly_one_gets_the_lease_s3(serial_s3_server, monkeypatch):
    server = serial_s3_server
    bucket = server.create_bucket()
    root = f"s3://{bucket}/root"
    env = dict(os.environ, **server.aws_env)
    for k, v in server.aws_env.items():  # this process too: credentials never in the config
        monkeypatch.setenv(k, v)
    st = Storage.open(root, storage_config=server.storage_config(key=None, secret=None), retry_seconds=30)
    racers = Racers(root, server.endpoint_url, env)
    holder = None
    try:
        racers.wait_ready()

        # fresh leases: nobody holds them; every racer's create is a put with If-None-Match: *
        for r in range(FRESH_ROUNDS):
            _exactly_one_wins(st, f"_LEASE-fresh-{r}", racers.race(f"_LEASE-fresh-{r}"))

        # an expired lease (its run stopped renewing): every racer takes it over with If-Match
        stale = st.acquire_lease("_LEASE-expired", ttl_s=0.2, owner="expired-run", auto_renew=False)
        time.sleep(0.5)
        assert stale.info.expired()
        winner = _exactly_one_wins(st, "_LEASE-expired", racers.race("_LEASE-expired"))
        assert winner["label"] != "expired-run"

        # a lease whose holder on this host was SIGKILLed: not expired (ttl 600), but its pid is
        # gone, so it is taken over at once, again by exactly one racer
        code = ("import sys; from normguide.config import StorageConfig; from normguide.data.storage import Storage; "
                "st = Storage.open(sys.argv[1], storage_config=StorageConfig(endpoint_url=sys.argv[2], "
                "region_name='us-east-1')); st.acquire_lease('_LEASE-killed', ttl_s=600, owner='killed-run', "
                "auto_renew=False); print('held', flush=True); sys.stdin.read()")
        holder = subprocess.Popen([sys.executable, "-c", code, root, server.endpoint_url],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert holder.stdout.readline().strip() == "held"
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
        assert [h.pid for h in read_holders(st, "_LEASE-killed")] == [holder.pid]
        winner = _exactly_one_wins(st, "_LEASE-killed", racers.race("_LEASE-killed"))
        assert winner["label"] != "killed-run"
    finally:
        racers.close()
        _stop_process(holder, hard=True)
