"""The concept table is read once per run (issue 22): the run context holds the snapshot (its
source, rows and digest) and every step takes it from there; the config does no IO."""

from __future__ import annotations

import json

from normguide.config import RunConfig
from normguide.data.concept_table import TableSnapshot
from normguide.data.schema import write_concept_table
from normguide.diffusion import load_pipeline
from normguide.pipeline import run_dataset
from tests.file_opens import counting_opens
from tests.helpers import make_reference


def _table(tmp_path):
    ref = make_reference(tmp_path / "in" / "alpha" / "0.png", seed=3)
    path = tmp_path / "in" / "concepts.parquet"
    write_concept_table([{"concept_id": "alpha", "name": "alpha", "reference_uris": [str(ref)]}], path)
    return path


def test_a_local_run_reads_the_concept_table_exactly_once(tmp_path):
    table = _table(tmp_path)
    cfg = RunConfig.model_validate({
        "concepts": str(table), "output": str(tmp_path / "out"), "model": "demo:sd1",
        "inversion": {"num_inference_steps": 1, "reconstruction": False},
        "generation": {"num_inference_steps": 1, "guidance_scale": 1.0, "batch_size": 2},
        "plan": {"methods": ["nao"], "num_images": 2},
    })
    model = load_pipeline("demo:sd1")
    with counting_opens(table) as opens:
        summary = run_dataset(cfg, model=model)
    assert summary.finalized and summary.concepts["alpha"].status == "completed"
    assert opens() == 1
    # the one read is the snapshot the run recorded: run.json's digest and the run id come from it
    snapshot = TableSnapshot.read(str(table))
    record = json.loads((tmp_path / "out" / summary.run_id / "run.json").read_text())
    assert record["table_digest"] == snapshot.digest and summary.run_id == cfg.run_id_for(snapshot.digest)

    with counting_opens(table) as opens:  # a rerun of the complete run: a no-op, one read
        again = run_dataset(cfg, model=model)
    assert again.already_complete and opens() == 1
