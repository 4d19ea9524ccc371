"""The README's first command as a new user runs it, and the command's process-level behaviour:
a fresh Prefect home on a machine whose cores are busy, Ctrl-C, and exit without aborting."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import as_from_a_terminal

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "normguide" / "demo" / "example" / "concepts.parquet"


def _env(tmp_path: Path) -> dict[str, str]:
    """A new user's environment: no Prefect server configured, a Prefect home never used."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    home = tmp_path / "prefect-home"
    home.mkdir(exist_ok=True)
    env.update(PREFECT_HOME=str(home), PYTHONUNBUFFERED="1", COLUMNS="200")
    return env


def _normguide(*args: str) -> list[str]:
    return [sys.executable, "-c", "from normguide.cli import main; main()", *args]


def _burn(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


@pytest.fixture
def busy_cores():
    """Keep every core busy, as on a laptop or a shared CI box."""
    stop = multiprocessing.Event()
    procs = [multiprocessing.Process(target=_burn, args=(stop,), daemon=True) for _ in range(os.cpu_count() or 2)]
    for p in procs:
        p.start()
    yield
    stop.set()
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()


def test_readme_first_command_in_a_fresh_prefect_home_under_load(tmp_path, busy_cores):
    # `normguide run` with every default, from an empty folder
    res = subprocess.run(_normguide("run"), cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                         timeout=1200)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "Traceback" not in out and "complete" in res.stdout
    roots = list((tmp_path / "outputs").glob("run-*"))
    assert len(roots) == 1 and (roots[0] / "_SUCCESS").exists() and (roots[0] / "README.md").exists()
    assert json.loads((roots[0] / "run.json").read_text())["status"] == "complete"
    # the rerun answers without loading the model
    again = subprocess.run(_normguide("run"), cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0 and "already complete (nothing to do)" in again.stdout


def test_ctrl_c_stops_within_seconds_marks_the_run_and_a_rerun_resumes(tmp_path):
    args = _normguide("run", "--steps", "10", "--inversion-steps", "10", "--num-images", "4")
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=as_from_a_terminal)
    lines = []
    for line in proc.stdout:  # wait until the first concept is done
        lines.append(line)
        if line.startswith("[1/3]"):
            break
    else:
        pytest.fail("the run ended before its first concept: " + "".join(lines) + proc.stderr.read())
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    waited = time.monotonic() - sent
    assert proc.returncode == 130, out + err
    assert waited < 20, f"took {waited:.1f} s to stop"
    assert "interrupted:" in out and "Traceback" not in out + err
    root = next((tmp_path / "outputs").glob("run-*"))
    record = json.loads((root / "run.json").read_text())
    assert record["status"] == "interrupted" and not (root / "_SUCCESS").exists()

    assert record["error"] == "interrupted by the user (Ctrl-C)"

    rerun = subprocess.run(args, cwd=tmp_path, env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert "resuming: 1 of 3 concept(s) complete" in rerun.stdout + rerun.stderr  # a resumed run says so
    assert "digit-two: skipped" in rerun.stdout and (root / "_SUCCESS").exists()
    assert json.loads((root / "run.json").read_text())["status"] == "complete"


def test_sigterm_is_recorded_as_terminated_and_output_off_a_terminal_says_what_happens(tmp_path):
    args = _normguide("run", "--steps", "2", "--inversion-steps", "2", "--num-images", "1", "--concept-ids", "digit-two")
    proc = subprocess.Popen(args, cwd=tmp_path, env=_env(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines = []
    for line in proc.stdout:  # output is a pipe: the log reporter's lines
        lines.append(line)
        if "digit-two: inversion of 5 images started" in line:  # run.json exists; the model is at work
            break
    else:
        pytest.fail("the run ended before its first stage: " + "".join(lines))
    proc.send_signal(signal.SIGTERM)
    out = "".join(lines) + proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, out
    # the first lines say what happens next, before the model loads
    assert "1 concept(s) (digit-two)" in out and "next: loading the model demo, then inverting digit-two" in out
    assert out.index("next: loading the model") < out.index("loading the model demo\n")
    assert "terminated (SIGTERM):" in out and "Traceback" not in out
    root = next((tmp_path / "outputs").glob("run-*"))
    record = json.loads((root / "run.json").read_text())
    assert record["status"] == "interrupted" and record["error"] == "terminated (SIGTERM)"


def test_validate_never_aborts_at_exit(tmp_path):
    # torch imported before pyarrow made a process abort at exit (134) in about 1 run in 3
    codes = []
    for _ in range(12):
        res = subprocess.run(_normguide("validate", str(EXAMPLE)), env=_env(tmp_path), capture_output=True,
                             text=True, timeout=120)
        codes.append(res.returncode)
        assert "terminate called" not in res.stderr, res.stderr
        assert res.returncode == 0, res.stdout + res.stderr
    assert codes == [0] * 12
