"""``normguide run --prefect`` killed with SIGKILL (issue 12): nothing it started outlives it, and
its flow run ends Crashed instead of staying Running for ever; a normal run leaves no process
behind; the watchdog crashes only its own CLI's flow runs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.helpers import as_from_a_terminal

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]  # the slow tier; a real Prefect API


# -- processes, from /proc (no psutil) -----------------------------------------------------------
def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, state letter) of a process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()
    return int(fields[1]), fields[0]


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")  # a zombie has ended; nobody reaped it yet


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _descendants(root: int) -> set[int]:
    parents = {pid: stat[0] for pid in _pids() if (stat := _stat(pid)) is not None}
    found, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _servers_of(prefect_home: Path) -> set[int]:
    """Live Prefect API servers (uvicorn) of this Prefect home, whoever started them."""
    found = set()
    for pid in _pids():
        if "uvicorn" not in _cmdline(pid) or not _alive(pid):
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PREFECT_HOME={prefect_home}".encode() in env:
            found.add(pid)
    return found


def _watchdogs_of(cli_pid: int) -> set[int]:
    return {pid for pid in _pids() if (cmd := _cmdline(pid)) and "normguide.cli.watchdog" in cmd
            and str(cli_pid) in cmd and _alive(pid)}


def _kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# -- the command, in a Prefect home of its own with no server configured ------------------------
@pytest.fixture(scope="module")
def prefect_home(tmp_path_factory) -> Path:
    """One fresh Prefect home for the module (its database is created once, by the first run)."""
    home = tmp_path_factory.mktemp("prefect-home")
    yield home
    _kill_all(_servers_of(home))  # a failed test leaves nothing running


def _env(prefect_home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(prefect_home), PYTHONUNBUFFERED="1", COLUMNS="200")
    return env


def _config_file(tmp_path: Path, concept_dir: Path, **plan) -> Path:
    cfg = {
        "concepts": str(concept_dir / "concepts.parquet"),
        "output": str(tmp_path / "out"),
        "inversion": {"num_inference_steps": 2, "reconstruction": False},
        "generation": {"num_inference_steps": 2, "batch_size": 2},
        "plan": {"methods": ["nao"], "num_images": 2, **plan},
    }
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _flow_runs(prefect_home: Path) -> list[dict]:
    """Every flow run in the Prefect home's database: name, state type, state message, tags."""
    db = sqlite3.connect(f"file:{prefect_home / 'prefect.db'}?mode=ro", uri=True, timeout=30)
    try:
        rows = db.execute("SELECT r.name, r.state_type, s.message, r.tags FROM flow_run r "
                          "LEFT JOIN flow_run_state s ON s.id = r.state_id").fetchall()
    finally:
        db.close()
    return [{"name": n, "state": t, "message": m or "", "tags": json.loads(tags or "[]")} for n, t, m, tags in rows]


def _of_cli(runs: list[dict], cli_pid: int) -> list[dict]:
    return [r for r in runs if any(t.startswith("normguide-cli-") and f"-{cli_pid}-" in t for t in r["tags"])]


def test_a_normal_prefect_run_leaves_no_process_behind(concept_dir, tmp_path, prefect_home):
    proc = subprocess.Popen([sys.executable, "-m", "normguide.cli", "run", "--prefect", "--config",
                             str(_config_file(tmp_path, concept_dir))],
                            env=_env(prefect_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=600)
    finally:
        _kill_all([proc.pid])
    assert proc.returncode == 0, out
    assert "Traceback" not in out and "manifest: " in out
    assert not _watchdogs_of(proc.pid), "the watchdog outlived the run"
    assert not _servers_of(prefect_home), "the ephemeral Prefect server outlived the run"
    runs = _of_cli(_flow_runs(prefect_home), proc.pid)
    assert [r["state"] for r in runs] == ["COMPLETED"], runs


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["kill-9", "ctrl-c"])
def test_a_killed_or_interrupted_run_is_crashed_and_leaves_no_process(concept_dir, tmp_path, prefect_home, sig):
    # many images and steps: the run is still generating when the signal comes
    cfg = _config_file(tmp_path, concept_dir, num_images=40)
    proc = subprocess.Popen([sys.executable, "-m", "normguide.cli", "run", "--prefect", "--config", str(cfg),
                             "--steps", "30"],
                            env=_env(prefect_home), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=as_from_a_terminal)
    lines: list[str] = []
    generating = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "Task run 'start-run" in line:  # the model is loaded, run.json written: generating
                generating.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    started = set()
    try:
        if not generating.wait(300):
            pytest.fail("the run did not start generating: " + "".join(lines))
        time.sleep(2)
        started = _descendants(proc.pid)
        assert proc.poll() is None, "".join(lines)
        assert any("uvicorn" in _cmdline(pid) for pid in started), "no Prefect server among the CLI's processes"
        os.kill(proc.pid, sig)
        code = proc.wait(timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and [pid for pid in started if _alive(pid)]:
            time.sleep(0.2)
        left = {pid: " ".join(_cmdline(pid))[:200] for pid in started if _alive(pid)}
        assert not left, f"processes the CLI started are still running: {left}"
        assert not _servers_of(prefect_home)
        reader.join(10)
        runs = _of_cli(_flow_runs(prefect_home), proc.pid)
        assert runs and all(r["state"] == "CRASHED" for r in runs), runs
        if sig == signal.SIGKILL:  # the watchdog marked it, naming the CLI
            assert code == -signal.SIGKILL
            assert all(f"pid {proc.pid}" in r["message"] and "killed" in r["message"] for r in runs), runs
        else:  # Prefect's engine marked it (the server is out of the terminal's reach: still up)
            assert code == 130, "".join(lines)
            assert "interrupted:" in "".join(lines) and "Traceback" not in "".join(lines)
            assert all("interrupt" in r["message"] for r in runs), runs
    finally:
        _kill_all([proc.pid, *started])


def test_the_watchdog_crashes_only_its_own_cli_runs(prefect_api):
    """Against a configured server (the session's test API): EOF on the watchdog's pipe (its CLI
    died) crashes the non-final flow runs carrying its CLI's tag, and no one else's; 'done' (a
    clean exit) crashes nothing."""
    from prefect import flow
    from prefect.client.orchestration import get_client
    from prefect.states import Completed, Running

    @flow(name="watchdog-probe")
    def probe() -> None:
        pass

    mine, other = f"normguide-cli-test-111-{uuid.uuid4().hex[:6]}", f"normguide-cli-test-222-{uuid.uuid4().hex[:6]}"
    with get_client(sync_client=True) as client:
        running = client.create_flow_run(probe, tags=[mine], state=Running())
        finished = client.create_flow_run(probe, tags=[mine], state=Completed())
        someone_elses = client.create_flow_run(probe, tags=[other], state=Running())

    env = dict(os.environ, PREFECT_API_URL=prefect_api)

    def watchdog(tag: str, cli_pid: int) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "normguide.cli.watchdog", "--cli-pid", str(cli_pid),
                                 "--tag", tag], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True)

    clean = watchdog(other, 222)
    clean.stdin.write(b"done\n")
    clean.stdin.close()
    assert clean.wait(timeout=60) == 0, clean.stderr.read()

    killed = watchdog(mine, 111)
    killed.stdin.close()  # EOF without "done": its CLI died
    assert killed.wait(timeout=90) == 0, killed.stderr.read()

    with get_client(sync_client=True) as client:
        crashed = client.read_flow_run(running.id).state
        assert crashed.is_crashed() and "pid 111" in crashed.message and "killed" in crashed.message
        assert client.read_flow_run(finished.id).state.is_completed()
        assert client.read_flow_run(someone_elses.id).state.is_running()
