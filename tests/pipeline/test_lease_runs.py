"""Runs of the same output whose concepts overlap exclude each other (issue 25): a whole run, a
run of a subset, a run of the whole table spelled out as ids; a run that finalizes excludes
every writer; a run whose lease is taken over while it is stopped writes no more when it wakes.
Other holders live in their own processes (as other runs do)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from normguide.data.storage import LeaseHeld
from normguide.data.storage.lease import read_holders
from normguide.diffusion import load_pipeline
from normguide.pipeline import RunContext, run_dataset
from tests.helpers import make_reference
from tests.factories import never_load

#: A holder process: claims argv[2] ('' = every concept), prints "held", keeps it until stdin closes.
HOLDER = textwrap.dedent("""
    import sys
    from normguide.data.storage import Storage
    lease = Storage.open(sys.argv[1]).acquire_lease(owner="other run", concepts=sys.argv[2].split(",") if sys.argv[2] else None)
    print("held", flush=True)
    sys.stdin.read()
    lease.release()
""")


class Holder:
    def __init__(self, root: str, concepts: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", HOLDER, root, concepts], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout.readline().strip() == "held"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def model():
    return load_pipeline("demo:sd1")


def _config(folder: Path, **over) -> RunConfig:
    rows = []
    for cid in ("alpha", "beta"):
        ref = make_reference(folder / "refs" / f"{cid}.png", seed=len(cid))
        rows.append({"concept_id": cid, "name": cid, "reference_uris": [str(ref)]})
    write_concept_table(rows, folder / "concepts.parquet")
    return RunConfig.model_validate({
        "concepts": str(folder / "concepts.parquet"), "output": str(folder / "out"), "model": "demo:sd1",
        "run_id": "r", "inversion": {"num_inference_steps": 2, "reconstruction": False},
        "generation": {"num_inference_steps": 2, "batch_size": 1}, "plan": {"methods": ["nao"], "num_images": 2},
        "evaluation": {"enabled": False}, **over})



def test_whole_runs_and_subsets_exclude_each_other_where_they_overlap(tmp_path, model):
    cfg = _config(tmp_path)
    root = RunContext.create(cfg).storage.root
    with Holder(root, "alpha"):  # a run of --concept-ids alpha
        for ids in (None, ["alpha", "beta"], ["alpha"]):  # whole run, table spelled out, same subset
            with pytest.raises(LeaseHeld, match="other run.*1 concept\\(s\\) \\(alpha\\)"):
                run_dataset(cfg, concept_ids=ids, model=never_load)
        # a disjoint subset runs beside it
        beta = run_dataset(cfg, concept_ids=["beta"], finalize=False, model=model)
        assert beta.concepts["beta"].status == "completed"
    with Holder(root, ""):  # a whole run: every subset is refused
        with pytest.raises(LeaseHeld, match="other run.*every concept"):
            run_dataset(cfg, concept_ids=["beta"], finalize=False, model=never_load)
    with Holder(root, "beta"):  # finalizing excludes every writer: alpha is made, not finalized
        with pytest.raises(LeaseHeld, match="other run.*beta"):
            run_dataset(cfg, concept_ids=["alpha"], finalize=True, model=model)
        store = RunContext.create(cfg).storage
        assert store.exists("manifest/part-alpha.parquet") and not store.exists("_SUCCESS")
    assert run_dataset(cfg, model=model).status == "complete"
    assert not (tmp_path / "out" / "r" / "_LEASE").exists()


@pytest.mark.slow  # the slow tier: a run as a process
def test_a_run_stopped_past_its_lease_and_taken_over_writes_no_more(tmp_path):
    """SIGSTOP a run mid-generation, move its lease's expiry into the past by hand (a skewed clock),
    take the root over, SIGCONT: the run stops with the lost lease named and writes nothing
    after its next check (at most the one image batch it had checked before it was stopped)."""
    cfg = _config(tmp_path, plan={"methods": ["nao"], "num_images": 6})
    (tmp_path / "cfg.json").write_text(cfg.model_dump_json())
    run_root = tmp_path / "out" / "r"
    env = dict(os.environ, COLUMNS="200")
    proc = subprocess.Popen([str(Path(sys.executable).with_name("normguide")), "run", "--no-prefect", "-c",
                             str(tmp_path / "cfg.json")], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while not list((run_root / "images").glob("alpha/*.png")) and time.monotonic() < deadline:
            assert proc.poll() is None, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGSTOP)
        lease = run_root / "_LEASE"
        doc = json.loads(lease.read_text())
        doc["holders"][0]["expires"] = time.time() - 1
        lease.write_text(json.dumps(doc))
        from normguide.data.storage import Storage

        store = Storage.open(str(run_root))
        other = store.acquire_lease(owner="the run that took over", auto_renew=False)
        before = {p: p.stat().st_mtime_ns for p in run_root.rglob("*") if p.is_file() and p.name != "_LEASE"}
        proc.send_signal(signal.SIGCONT)
        out = proc.communicate(timeout=120)[0]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out
    assert "no longer ours" in out and "the run that took over" in out, out
    after = {p: p.stat().st_mtime_ns for p in run_root.rglob("*") if p.is_file() and p.name != "_LEASE"}
    changed = [p for p in after if before.get(p) != after[p]]
    assert len(changed) <= 1 and all(p.parent.name == "alpha" and p.suffix == ".png" for p in changed), changed
    assert not (run_root / "manifest").exists() and not (run_root / "_SUCCESS").exists()
    assert [h.label for h in read_holders(store)] == ["the run that took over"]  # left alone
    other.release()
