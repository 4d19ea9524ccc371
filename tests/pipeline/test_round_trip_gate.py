"""The round-trip gate (issue 21): ``inversion.max_round_trip_error`` leaves a reference whose
invert -> regenerate error exceeds it out of its concept's seed pool (named in a warning), and a
concept with none left fails alone; the configured inverter reaches the seeds file and manifest."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from normguide.config import RunConfig
from normguide.data.seeds import SeedsFile
from normguide.diffusion import UnsupportedFeatureError, load_pipeline
from normguide.pipeline import run_dataset
from tests.factories import reference_table, tiny_config


@pytest.fixture(scope="module")
def model():
    return load_pipeline("demo:sd1")


@pytest.fixture
def table(tmp_path):
    return reference_table(tmp_path / "t.parquet", (("alpha", 3), ("beta", 3)), refs_dir=tmp_path / "refs",
                           seed=lambda c, i: 97 * i + len(c) * 13 + ord(c[0]))


def _errors(root) -> dict[str, list[float]]:
    return {c: SeedsFile.from_bytes((root / "seeds" / f"{c}.safetensors").read_bytes()).reconstruction_errors
            for c in ("alpha", "beta")}


def test_the_gate_drops_references_above_the_bound_and_fails_a_concept_with_none_left(table, tmp_path, model, caplog):
    first = run_dataset(tiny_config(table, tmp_path / "a", reconstruction=True), model=model)
    errors = _errors(tmp_path / "a" / first.run_id)
    low, high = sorted(errors, key=lambda c: min(errors[c]))
    assert min(errors[low]) < min(errors[high]), errors  # distinct references: distinct round trips
    bound = (min(errors[low]) + min(errors[high])) / 2  # keeps some of `low`, none of `high`
    cfg = tiny_config(table, tmp_path / "b", reconstruction=True, **{"inversion.max_round_trip_error": bound})
    assert cfg.run_id_for("t") != tiny_config(table, tmp_path / "b", reconstruction=True).run_id_for("t")
    with caplog.at_level(logging.WARNING, logger="normguide"):
        summary = run_dataset(cfg, model=model)
    assert summary.concepts[high].status == "failed" and "the concept fails" in summary.concepts[high].error
    assert summary.concepts[low].status == "completed"
    kept = [i for i, e in enumerate(errors[low]) if e <= bound]
    dropped = [i for i, e in enumerate(errors[low]) if e > bound]
    refs = pd.read_parquet(tmp_path / "b" / summary.run_id / "manifest" / f"part-{low}.parquet").source_refs
    used = {u for r in refs for u in r}
    uris = SeedsFile.from_bytes((tmp_path / "b" / summary.run_id / "seeds" / f"{low}.safetensors").read_bytes()
                                ).meta["reference_uris"]
    assert used == {uris[i] for i in kept}  # every kept reference feeds the centroid; no dropped one appears
    assert dropped and any(f"concept {low!r}: {len(dropped)} reference(s) left out" in r.getMessage()
                           for r in caplog.records)


def test_the_gate_needs_the_round_trip_and_an_unrunnable_inverter_is_refused_up_front(table, tmp_path, model):
    with pytest.raises(ValueError, match="max_round_trip_error needs inversion.reconstruction"):
        RunConfig(inversion={"max_round_trip_error": 0.1})
    cfg = tiny_config(table, tmp_path / "c", **{"inversion.inverter": "flow-euler"})
    with pytest.raises(UnsupportedFeatureError, match="flow-euler"):
        run_dataset(cfg, model=model)
    assert not (tmp_path / "c").exists() or not list((tmp_path / "c").rglob("*.safetensors"))


def test_the_configured_inverter_is_recorded(table, tmp_path, model):
    cfg = tiny_config(table, tmp_path / "d", **{"inversion.inverter": "ddim-reg"})
    summary = run_dataset(cfg, concept_ids=["alpha"], finalize=False, model=model)
    root = tmp_path / "d" / summary.run_id
    assert SeedsFile.from_bytes((root / "seeds" / "alpha.safetensors").read_bytes()).meta["inverter"] == "ddim-reg"
    assert set(pd.read_parquet(root / "manifest" / "part-alpha.parquet").inverter) == {"ddim-reg"}
