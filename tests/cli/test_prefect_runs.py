"""The ``normguide`` command as a user runs it."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prefect.settings import PREFECT_API_URL
from typer.testing import CliRunner

from normguide.cli import app
from normguide.data.schema import write_concept_table

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]  # the slow tier; a real Prefect API

runner = CliRunner()


def normguide(*args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it: its own process, tracked on the test's Prefect API."""
    env = dict(os.environ, PREFECT_API_URL=PREFECT_API_URL.value(), COLUMNS="200")
    return subprocess.run(
        [sys.executable, "-m", "normguide.cli", *args], env=env, capture_output=True, text=True, timeout=600
    )


def _config_file(tmp_path, concept_dir, **extra):
    cfg = {
        "concepts": str(concept_dir / "concepts.parquet"),
        "output": str(tmp_path / "out"),
        "inversion": {"num_inference_steps": 2, "reconstruction": False},
        "generation": {"num_inference_steps": 2, "batch_size": 2},
        "plan": {"methods": ["nao"], "num_images": 2},
        **extra,
    }
    p = tmp_path / "run.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_run_prints_where_and_summary(concept_dir, tmp_path):
    cfg = _config_file(tmp_path, concept_dir)
    res = normguide("run", "--config", str(cfg), "--methods", "nao,random")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "small digits model" in res.stdout
    assert "dataset: " in res.stdout and "manifest: " in res.stdout
    manifest = Path(res.stdout.split("manifest: ")[1].split()[0])
    df = pd.read_parquet(manifest)
    assert set(df.method) == {"nao", "random"} and len(df) == 2 * 2 * 2
    assert "alpha" in res.stdout and "completed" in res.stdout

    again = normguide("run", "--config", str(cfg), "--methods", "nao,random")
    assert again.returncode == 0 and "already complete" in again.stdout


def test_run_refuses_a_missing_reference_before_any_work(concept_dir, tmp_path):
    rows = [
        {"concept_id": "ok", "name": "ok", "reference_uris": ["refs/alpha/0.png"]},
        {"concept_id": "broken", "name": "broken", "reference_uris": ["refs/missing.png"]},
    ]
    write_concept_table(rows, concept_dir / "mixed.parquet")
    cfg = _config_file(tmp_path, concept_dir)
    res = normguide("run", "--strict", "--config", str(cfg), "--concepts", str(concept_dir / "mixed.parquet"))
    # with --strict (the default skips the concept alone: tests/pipeline/test_partial_references.py),
    # a missing reference is bad input, found before any model or Prefect start: exit 2, one
    # message naming the concept and the file, no traceback, nothing written
    assert res.returncode == 2, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert "concept 'broken': reference image" in out and "missing.png" in out and "does not exist" in out
    assert "Traceback" not in out and not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("run.json"))


def test_bad_config_and_table_are_usage_errors(concept_dir, tmp_path):
    cfg = _config_file(tmp_path, concept_dir, plan={"methods": ["bogus"]})
    res = runner.invoke(app, ["run", "--config", str(cfg)])
    assert res.exit_code == 2 and "plan.methods" in res.output

    write_concept_table([{"concept_id": "../x", "name": "x", "reference_uris": ["a.png"]}], tmp_path / "bad.parquet")
    res = runner.invoke(app, ["validate", str(tmp_path / "bad.parquet")])
    assert res.exit_code == 2 and "concept_id" in res.output and "'../x'" in res.output

    res = runner.invoke(app, ["validate", str(concept_dir / "concepts.parquet")])
    assert res.exit_code == 0 and "2 concept(s) OK" in res.output


def test_config_command_masks_secrets(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("storage:\n  key: AKIA-VISIBLE\n  secret: very-secret\n")
    res = runner.invoke(app, ["config", "--config", str(p)])
    assert res.exit_code == 0
    assert "very-secret" not in res.output and "AKIA-VISIBLE" not in res.output and "**********" in res.output
