"""A new user's first hour: warnings when the model cannot draw what the table asks (validate, run
start, run.json), progress lines while a stage runs when output is not a terminal, the outline and
resume lines, `plan` with `run`'s options and run id, the --quick preset, --version in help."""

from __future__ import annotations

import logging
import re
import time

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast
from typer.testing import CliRunner

from normguide import progress
from normguide.cli import app
from normguide.config import RunConfig
from normguide.data.schema import Concept, write_concept_table
from normguide.demo import digits
from normguide.pipeline import resolved_run_id
from normguide.vocabulary import drawing_warnings, load_tokenizer, tokenizer_dir, unknown_words

runner = CliRunner()
PHOTOS = [("cat", "cat"), ("coffee", "cup of coffee"), ("astronaut", "astronaut")]


def _table(folder, rows):
    refs = []
    for i, im in enumerate(digits.reference_images(2, n=1)):
        im.save(folder / f"ref-{i}.png")
        refs.append(f"ref-{i}.png")  # relative to the table
    write_concept_table([{"concept_id": cid, "name": name, "reference_uris": refs} for cid, name in rows],
                        folder / "concepts.parquet")
    return folder / "concepts.parquet"


def test_demo_tokenizer_names_the_words_it_does_not_know():
    tok = load_tokenizer(str(tokenizer_dir("demo")))
    assert unknown_words(tok, "a photo of a cat") == ["cat"]
    assert unknown_words(tok, "a photo of a cup of coffee") == ["cup", "coffee"]
    assert unknown_words(tok, "a handwritten digit seven") == []


def test_a_tokenizer_with_an_unknown_token():
    vocab = {"[UNK]": 0, "a": 1, "photo": 2, "of": 3, "cat": 4}
    raw = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]")
    assert unknown_words(tok, "a photo of a cat") == []
    assert unknown_words(tok, "a photo of an astronaut") == ["an", "astronaut"]


def test_photo_table_on_the_demo_warns_per_concept_and_word():
    concepts = [Concept(concept_id=cid, name=name, reference_uris=("x.png",)) for cid, name in PHOTOS]
    lines = drawing_warnings("demo", concepts, "a photo of a {name}")
    assert len(lines) == 6
    assert any("'cat'" in line and "tokenizer does not know 'cat'" in line for line in lines)
    assert any("'coffee'" in line and "'cup', 'coffee'" in line for line in lines)
    assert sum("draws only handwritten digits" in line for line in lines) == 3
    digits_ok = [Concept(concept_id="d", name="seven", reference_uris=("x.png",), prompt="a handwritten digit seven")]
    assert drawing_warnings("demo", digits_ok, "a photo of a {name}") == []
    assert drawing_warnings("some/hub-id", concepts, "a photo of a {name}") == []  # nothing local to read


def test_validate_warns_and_still_passes(tmp_path):
    table = _table(tmp_path, PHOTOS)
    res = runner.invoke(app, ["validate", str(table)], env={"COLUMNS": "400"})
    assert res.exit_code == 0, res.output
    assert "3 concept(s) OK, 6 warning(s)" in res.output
    assert "warning: concept 'astronaut': the model's tokenizer does not know 'astronaut'" in res.output


def test_run_records_the_warnings_in_run_json_and_the_card(tmp_path, caplog):
    import json

    from normguide.pipeline import run_dataset

    table = _table(tmp_path, PHOTOS[:1])
    cfg = RunConfig.model_validate({
        "concepts": str(table), "output": str(tmp_path / "out"), "model": "demo",
        "inversion": {"num_inference_steps": 2, "reconstruction": False},
        "generation": {"num_inference_steps": 2}, "plan": {"methods": ["nao"], "num_images": 1},
    })
    with caplog.at_level(logging.INFO, logger="normguide"):
        summary = run_dataset(cfg)
    assert summary.ok and summary.finalized
    text = [r.getMessage() for r in caplog.records]
    first_warning = next(i for i, t in enumerate(text) if "tokenizer does not know 'cat'" in t)
    loading = next(i for i, t in enumerate(text) if t == "loading the model demo")
    assert first_warning < loading  # named before any model work
    assert any(t.startswith("1 concept(s) (cat)") and "next: loading the model demo" in t for t in text)
    record = json.loads((tmp_path / "out" / summary.run_id / "run.json").read_text())
    assert len(record["warnings"]) == 2 and "'cat'" in record["warnings"][0]
    # source_refs as written in the table (relative), not this machine's resolved path
    import pandas as pd

    manifest = pd.read_parquet(tmp_path / "out" / summary.run_id / "manifest.parquet")
    assert {tuple(r) for r in manifest.source_refs} == {("ref-0.png",)}
    card = (tmp_path / "out" / summary.run_id / "README.md").read_text()
    assert "## Warnings" in card and "draws only handwritten digits" in card


def test_log_reporter_reports_while_a_stage_runs(caplog):
    reporter = progress.LogReporter(interval=0.2)
    old = progress.set_reporter(reporter)
    try:
        with caplog.at_level(logging.INFO, logger="normguide"):
            with progress.stage("digit-two", "generation", total=4) as bar:
                time.sleep(0.5)  # the first batch: no advance yet, a heartbeat says so
                bar.advance(2)
                time.sleep(0.5)
                bar.advance(2)
    finally:
        progress.set_reporter(old)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "digit-two: generation of 4 images started"
    assert any("generation 0/4 images, first batch running" in line for line in lines)
    assert any(re.search(r"generation 2/4 images, [\d.]+ images/s, ETA \d+ s", line) for line in lines)
    assert re.match(r"digit-two: generation 4/4 images in [\d.]+ s", lines[-1])


def test_plan_takes_runs_options_and_shows_its_run_id(tmp_path):
    table = _table(tmp_path, [("digit-two", "two")])
    opts = ["--concepts", str(table), "--steps", "7", "--inversion-steps", "5", "--num-images", "2",
            "--guidance", "3", "--model", "demo", "--output", str(tmp_path / "o")]
    res = runner.invoke(app, ["plan", *opts], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    cfg = RunConfig().with_overrides(**{
        "concepts": str(table), "generation.num_inference_steps": 7, "inversion.num_inference_steps": 5,
        "plan.num_images": 2, "generation.guidance_scale": 3.0, "output": str(tmp_path / "o")})
    assert f"run {resolved_run_id(cfg)} " in res.output
    quick = runner.invoke(app, ["plan", "--quick", "--concepts", str(table)], env={"COLUMNS": "300"})
    from normguide.presets import QUICK

    expected = resolved_run_id(RunConfig().with_overrides(**QUICK, concepts=str(table)))
    assert quick.exit_code == 0 and f"run {expected} " in quick.output and "outputs-quick" in quick.output
    # the refinement options too: the plan names the run that `run --refine ...` makes
    refined = runner.invoke(app, ["plan", *opts, "--refine", "--refine-iterations", "3", "--refine-lr", "0.2"],
                            env={"COLUMNS": "300"})
    expected = resolved_run_id(cfg.with_overrides(**{"refine.enabled": True, "refine.iterations": 3,
                                                     "refine.learning_rate": 0.2}))
    assert refined.exit_code == 0 and f"run {expected} " in refined.output and expected != resolved_run_id(cfg)


@pytest.mark.parametrize("command", [[], ["run"]])
def test_help_shows_no_bool_placeholder_and_states_quick(command):
    res = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "240"})
    assert res.exit_code == 0
    flags = [line for line in res.output.splitlines() if re.search(r"--(version|debug|quick)\b", line)]
    assert flags and not any("<bool>" in line for line in flags)
    if command:
        assert "--quick" in res.output and "outputs-quick" in res.output
