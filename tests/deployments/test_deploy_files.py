"""The deployment files deploy what exists: the nightly config's table, a local table checked at
deploy time (relative to the checkout, where the flows run), and `register list` checks every
file without a server."""

from __future__ import annotations

import subprocess
import sys

import pytest

from normguide.config import DEFAULT_CONCEPTS, RunConfig
from normguide.data.concept_table import TableSnapshot
from normguide.deployments.register import NIGHTLY_CONFIG, deployment_specs
from normguide.deployments.steps import CHECKOUT, run_config_parameters


def test_nightly_config_runs_a_table_that_exists():
    params = run_config_parameters(NIGHTLY_CONFIG)["config"]
    assert "concepts" not in params  # each worker reads the example of its own installed package
    cfg = RunConfig.model_validate(params)
    assert cfg.concepts == DEFAULT_CONCEPTS and TableSnapshot.read(cfg.concepts).digest  # it reads
    nightly = {s.name: s for s in deployment_specs()}["nightly"]
    assert nightly.parameters == {"config": params}


def test_a_missing_local_table_fails_the_deploy_naming_it(tmp_path):
    cfg = tmp_path / "nightly.yaml"
    cfg.write_text("concepts: examples/missing.parquet\nrun_id: nightly\n")
    with pytest.raises(ValueError, match=r"concepts: concept table 'examples/missing.parquet' does not exist") as err:
        run_config_parameters(str(cfg))
    assert str(CHECKOUT / "examples/missing.parquet") in str(err.value)
    table = tmp_path / "t.parquet"
    table.write_bytes(open(DEFAULT_CONCEPTS, "rb").read())
    cfg.write_text(f"concepts: {table}\nrun_id: nightly\n")
    assert run_config_parameters(str(cfg))["config"]["concepts"] == str(table)
    cfg.write_text("concepts: s3://bucket/concepts.parquet\nrun_id: nightly\n")  # remote: checked when it runs
    assert run_config_parameters(str(cfg))["config"]["concepts"] == "s3://bucket/concepts.parquet"


def test_register_list_checks_the_files_without_a_server():
    res = subprocess.run([sys.executable, "-m", "normguide.deployments.register", "list"], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "concepts: the shipped example" in res.stdout
    assert res.stdout.count("\ndeployment ") == len(deployment_specs())
