"""Resume: a run SIGKILLed part-way through generation, rerun, equals an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from normguide.pipeline import output_root

from .conftest import (
    CONCEPTS,
    assert_same_dataset,
    check_consistent,
    run_config,
    run_flow,
    snapshot,
)

pytestmark = pytest.mark.slow  # the slow tier (pyproject.toml)

REPO = Path(__file__).resolve().parents[2]
IMAGES_PER_CONCEPT = 12

# The child: the flow on a config file, tracked by the test's Prefect API (PREFECT_API_URL).
CHILD = """
import sys
from normguide.config import RunConfig
from normguide.flows.generate_dataset import generate_dataset

cfg = RunConfig.model_validate_json(open(sys.argv[1]).read())
state = generate_dataset(config=cfg, return_state=True)
sys.exit(0 if state.is_completed() else 1)
"""


def _count_images(root: Path) -> int:
    return sum(1 for p in root.glob("images/*/*.png"))


def test_sigkill_mid_generation_then_rerun_equals_clean_run(inputs, prefect_api, tmp_path):
    cfg = run_config(inputs.local_table, str(tmp_path / "killed"), **{"plan.num_images": IMAGES_PER_CONCEPT})
    total = IMAGES_PER_CONCEPT * len(CONCEPTS)
    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(cfg.model_dump_json())
    root = Path(output_root(cfg))

    # 1. Start the run in a subprocess; SIGKILL it once some, but not all, images exist
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_API_URL=prefect_api, PREFECT_HOME=str(tmp_path / "prefect-home"), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(cfg_file)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 180
        while _count_images(root) < 3:
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no image appeared within 180 s"
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    # 2. The killed state: partial, and consistent (no part without all of its images)
    objects = snapshot(cfg)
    images = [k for k in objects if k.startswith("images/")]
    assert 3 <= len(images) < total, f"kill came too late: {len(images)} of {total} images"
    assert "_SUCCESS" not in objects and "manifest.parquet" not in objects
    check_consistent(objects)
    for cid in CONCEPTS:
        have = sum(1 for k in images if k.startswith(f"images/{cid}/"))
        if have < IMAGES_PER_CONCEPT:
            assert f"manifest/part-{cid}.parquet" not in objects, cid

    # 3. Rerun the same run id: it finishes the job and generates only what was missing
    state, summary = run_flow(cfg)
    assert state.is_completed(), summary
    assert not summary.already_complete
    generated = sum(c.generated for c in summary.concepts.values())
    assert generated == total - len(images), summary
    resumed = snapshot(cfg)
    for k in images:  # nothing complete was rewritten
        assert resumed[k] == objects[k], k
    check_consistent(resumed)

    # 4. Equal to an uninterrupted run in another output root; no duplicates, no temporary files
    clean_cfg = cfg.with_overrides(output=str(tmp_path / "clean"))
    state, summary = run_flow(clean_cfg)
    assert state.is_completed(), summary
    clean = snapshot(clean_cfg)
    assert_same_dataset(resumed, clean)
    assert sum(1 for k in resumed if k.startswith("images/")) == total
    leftovers = [p for p in root.rglob("*") if p.name.endswith(".normguide-tmp")]
    # A write killed between its open() and os.replace() may leave one temporary file (listings
    # and the manifest ignore it); with batch size 1 there is at most one write in flight.
    assert len(leftovers) <= 1, leftovers

    # 5. And a third run is a no-op that says so
    state, summary = run_flow(cfg)
    assert state.is_completed() and summary.already_complete
