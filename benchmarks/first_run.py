"""The README's first command as a new user runs it: how long, and how soon the model starts.

Runs `normguide run` (every default: the shipped example, the demo model, CPU) and
`normguide run --quick` as new processes, each in a new empty folder with output to a pipe (not a
terminal, as in `normguide run > log 2>&1`), after one warm-up run of each (a warm disk cache:
"warm"). Per run it records:

- wall: command to exit;
- to first model call: command to the first "<concept>: inversion of N images started" line
  (printed right before the first batch enters the model);
- first line: command to the first line the command prints.

Prints a table (median, min and max of --runs runs), the load before and after (`uptime`), and
the progress output of the last default run (what a user sees in a log file).

    flock /work/coord/heavy.lock nice -n 0 .venv/bin/python benchmarks/first_run.py [--runs 3] [--busy 2]

``--busy N`` keeps N other processes spinning (`yes > /dev/null`), as on a machine whose cores
are busy with other work.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIRST_MODEL_CALL = re.compile(r": inversion of \d+ images? started")


def normguide() -> list[str]:
    exe = Path(sys.executable).with_name("normguide")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from normguide.cli import main; main()"]


def one_run(args: list[str], env: dict[str, str]) -> tuple[dict[str, float], str]:
    with tempfile.TemporaryDirectory(prefix="first-run-") as tmp:
        home = Path(tmp) / "prefect-home"
        home.mkdir()
        start = time.perf_counter()
        proc = subprocess.Popen(normguide() + args, cwd=tmp, env={**env, "PREFECT_HOME": str(home)},
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        first_line = first_model = None
        lines = []
        for line in proc.stdout:
            now = time.perf_counter() - start
            lines.append(f"[{now:7.1f} s] {line}")
            first_line = now if first_line is None else first_line
            if first_model is None and FIRST_MODEL_CALL.search(line):
                first_model = now
        code = proc.wait()
        wall = time.perf_counter() - start
        if code != 0:
            raise SystemExit(f"`normguide {' '.join(args)}` exited {code}:\n" + "".join(lines[-30:]))
    return {"wall": wall, "first model call": first_model or float("nan"), "first line": first_line or float("nan")}, "".join(lines)


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1, help="unmeasured runs of each command first (warm disk cache)")
    parser.add_argument("--busy", type=int, default=0, help="other processes keeping cores busy (yes > /dev/null)")
    parser.add_argument("--log", type=Path, help="write the last run's output here")
    parser.add_argument("--only", choices=("full", "quick"), help="measure only this command")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PYTHONUNBUFFERED="1", COLUMNS="160")
    busy = [subprocess.Popen(["yes"], stdout=subprocess.DEVNULL) for _ in range(args.busy)] if shutil.which("yes") else []
    print(f"load before: {uptime()}; busy processes: {len(busy)}", flush=True)
    results: dict[str, list[dict[str, float]]] = {}
    log = ""
    try:
        for name, cmd in (("normguide run", ["run"]), ("normguide run --quick", ["run", "--quick"])):
            if args.only and (args.only == "quick") != ("--quick" in cmd):
                continue
            for _ in range(args.warmup):  # warm-up: disk cache, bytecode
                one_run(cmd, env)
            results[name] = []
            for i in range(args.runs):
                numbers, out = one_run(cmd, env)
                results[name].append(numbers)
                print(f"{name} #{i + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in numbers.items()), flush=True)
                if cmd == ["run"] or args.only == "quick":
                    log = out
    finally:
        for p in busy:
            p.kill()
    print(f"load after: {uptime()}")
    print()
    print(f"| command ({args.runs} run(s), {args.warmup} warm-up; busy processes: {len(busy)}) | wall s median (min-max) | "
          "to first model call s | to first line s |")
    print("| --- | ---: | ---: | ---: |")
    for name, rows in results.items():
        def cell(key: str) -> str:
            v = [r[key] for r in rows]
            return f"{statistics.median(v):.1f} ({min(v):.1f}-{max(v):.1f})"
        print(f"| `{name}` | {cell('wall')} | {cell('first model call')} | {cell('first line')} |")
    if "normguide run" in results and "normguide run --quick" in results:
        full = statistics.median(r["wall"] for r in results["normguide run"])
        quick = statistics.median(r["wall"] for r in results["normguide run --quick"])
        print(f"\nquick / full wall: {quick / full:.2f}")
    if args.log:
        args.log.write_text(log)
    print("\nprogress output of the last run (not a terminal), with seconds since the command:\n")
    print(log)


if __name__ == "__main__":
    main()
