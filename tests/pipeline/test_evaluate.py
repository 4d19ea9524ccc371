"""The evaluation step on finished runs (local and S3), through the library and the CLI."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from typer.testing import CliRunner

from normguide.cli import app
from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from normguide.demo import digits
from normguide.diffusion import load_pipeline
from normguide.pipeline import RunContext, output_root, run_dataset, steps

METHODS = ("nao", "random")


@pytest.fixture(scope="module")
def model():
    return load_pipeline("demo:sd1")  # any model: the step judges whatever images a run has


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    rows = []
    for label in (2, 5):
        name = digits.CLASS_NAMES[label]
        refs = []
        for i, im in enumerate(digits.reference_images(label, n=2)):
            im.save(root / f"{name}-{i}.png")
            refs.append(f"{name}-{i}.png")
        rows.append({"concept_id": f"digit-{name}", "name": name, "reference_uris": refs})
    write_concept_table(rows, root / "concepts.parquet")
    return str(root / "concepts.parquet")


def _config(table, output, **storage) -> RunConfig:
    return RunConfig.model_validate({
        "concepts": table, "output": output, "model": "demo:sd1", "storage": storage,
        "inversion": {"num_inference_steps": 2, "reconstruction": False},
        "generation": {"num_inference_steps": 2, "batch_size": 4},
        "plan": {"methods": list(METHODS), "num_images": 3},
        "evaluation": {"judge": "digits"},
    })


def test_run_is_evaluated_when_a_judge_is_configured(tmp_path, table, model):
    summary = run_dataset(_config(table, str(tmp_path / "out")), model=model)
    assert summary.ok and summary.evaluation is not None
    root = tmp_path / "out" / summary.run_id
    metrics = pd.read_parquet(root / "eval" / "metrics.parquet")
    assert set(zip(metrics.concept_id, metrics.method)) == {
        (c, m) for c in ("digit-two", "digit-five", "(all)") for m in (*METHODS, "references")}
    synthetic = metrics.method != "references"  # the baseline row: each concept's references themselves
    assert (metrics.n_images[(metrics.concept_id != "(all)") & synthetic] == 3).all()
    assert metrics.recognisability.between(0, 1).all() and metrics.n_real.gt(20).all()
    report = (root / "eval" / "report.md").read_text()
    assert "digit-two" in report and "nao" in report
    assert (root / "eval" / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(summary.evaluation.per_method) == {*METHODS, "references"}


def test_evaluate_command_on_a_local_and_an_s3_run(tmp_path, table, model, s3_server, s3_bucket, monkeypatch):
    local = _config(table, str(tmp_path / "out")).with_overrides(**{"evaluation.enabled": False})
    s3 = _config(table, f"s3://{s3_bucket}/runs", **s3_server.storage).with_overrides(**{"evaluation.enabled": False})
    for cfg in (local, s3):
        assert run_dataset(cfg, model=model).evaluation is None
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.storage["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.storage["secret"])
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.storage["region_name"])
    for cfg, extra in ((local, []), (s3, ["--endpoint-url", s3_server.storage["endpoint_url"]])):
        res = CliRunner().invoke(app, ["evaluate", output_root(cfg), *extra], env={"COLUMNS": "200"})
        assert res.exit_code == 0, res.output
        assert "recognisability" in res.output and "eval/report.md" in res.output
        store = RunContext.create(cfg).storage
        metrics = pd.read_parquet(io.BytesIO(store.read_bytes("eval/metrics.parquet")))
        assert len(metrics) == 9  # (2 concepts + "(all)") x (nao, random, references)


def test_evaluate_bad_input_is_named(tmp_path, table, model):
    runner = CliRunner()
    res = runner.invoke(app, ["evaluate", str(tmp_path / "nothing")])
    assert res.exit_code == 2 and "has no run.json" in res.output
    cfg = _config(table, str(tmp_path / "out"))
    ctx = RunContext.create(cfg, model=model)
    steps.start(ctx)  # started, never finished
    res = runner.invoke(app, ["evaluate", output_root(cfg)])
    assert res.exit_code == 2 and "has no manifest.parquet" in res.output
    run_dataset(cfg.with_overrides(**{"evaluation.enabled": False}), model=model)
    missing = tmp_path / "no-clip-here"
    res = runner.invoke(app, ["evaluate", output_root(cfg), "--clip-model", str(missing)])
    assert res.exit_code == 2 and str(missing) in res.output
