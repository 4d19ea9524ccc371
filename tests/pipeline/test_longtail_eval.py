"""The long-tail protocol in a run's evaluation (evaluation.labelled_table): a whole tiny run whose
eval/longtail.parquet equals the library protocol on the same inputs, and bad tables refused with
one line naming the field and the table before any model loads."""

from __future__ import annotations

import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from normguide.cli import app
from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from normguide.demo import digits
from normguide.diffusion import load_pipeline
from normguide.evaluation import ClipJudge
from normguide.evaluation import longtail as lt
from normguide.pipeline import run_dataset
from tests.evaluation.conftest import build_tiny_clip
from tests.factories import never_load, tiny_config

RARE = {"digit-two": 2, "digit-five": 5}  # the run's concepts: their label in the table is the concept_id
COMMON = {"one": 1, "seven": 7}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return str(build_tiny_clip(tmp_path_factory.mktemp("clip")))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """The concept table (2 rare digits, 2 references each) and a labelled table beside its images
    (relative image paths): common digits 6 train + 4 test, rare digits 2 train + 4 test."""
    root = tmp_path_factory.mktemp("longtail")
    (root / "img").mkdir()
    concepts, rows = [], []
    for cid, d in RARE.items():
        refs = []
        for i, im in enumerate(digits.reference_images(d, n=2)):
            im.save(root / f"{cid}-ref{i}.png")
            refs.append(f"{cid}-ref{i}.png")
        concepts.append({"concept_id": cid, "name": digits.CLASS_NAMES[d], "reference_uris": refs})
    for label, d, n_train in [*((c, d, 2) for c, d in RARE.items()), *((c, d, 6) for c, d in COMMON.items())]:
        for i, im in enumerate(digits.reference_images(d, n=n_train + 4)):
            im.save(root / "img" / f"{label}-{i}.png")
            rows.append({"image_uri": f"img/{label}-{i}.png", "label": label, "split": "train" if i < n_train else "test"})
    write_concept_table(concepts, root / "concepts.parquet")
    frame = pd.DataFrame(rows)
    frame.to_parquet(root / "labelled.parquet", index=False)
    return root, frame


def _config(root, output, clip_dir, table="labelled.parquet", **overrides) -> RunConfig:
    return tiny_config(root / "concepts.parquet", output, methods=("nao",), num_images=2, batch_size=4,
                       **{"evaluation.judge": "clip", "evaluation.clip_model": clip_dir,
                          "evaluation.labelled_table": str(root / table), **overrides})


def test_run_writes_the_longtail_table_the_library_protocol_computes(tmp_path, inputs, clip_dir, monkeypatch):
    from normguide.pipeline import longtail

    monkeypatch.setattr(longtail, "TABLE_CHUNK", 5)  # the table read and embedded in several chunks
    root, frame = inputs
    summary = run_dataset(_config(root, tmp_path / "out", clip_dir), model=load_pipeline("demo:sd1"))
    assert summary.ok and summary.evaluation is not None and summary.evaluation.longtail_uri
    run = tmp_path / "out" / summary.run_id
    table = pd.read_parquet(run / "eval" / "longtail.parquet")
    assert list(table.training_set) == ["real only", "real + references", "real, re-weighted", "real + nao",
                                        "real + references + nao"]
    assert (table.classifier == "linear").all() and table[["rare_accuracy", "overall_accuracy"]].stack().between(0, 1).all()
    assert table.set_index("training_set").n_added.to_dict() == {
        "real only": 0, "real + references": 4, "real, re-weighted": 0, "real + nao": 4, "real + references + nao": 8}
    assert summary.evaluation.longtail_rare_accuracy == dict(zip(table.training_set, table.rare_accuracy))

    # the same protocol from the library, on the run's own images and references: the same numbers
    manifest = pd.read_parquet(run / "manifest.parquet")
    images = {m: ([Image.open(run / f) for f in manifest.file_name[manifest.method == m]],
                  list(manifest.concept_id[manifest.method == m])) for m in ("nao",)}
    refs = ([Image.open(root / f"{c}-ref{i}.png") for c in RARE for i in range(2)], [c for c in RARE for _ in range(2)])
    expected = lt.probe_from_table(frame.assign(image_uri=[str(root / u) for u in frame.image_uri]), source="t",
                                   read_image=Image.open, embed=ClipJudge(clip_dir).embed, rare=list(RARE),
                                   synthetic=images, references=refs)
    pd.testing.assert_frame_equal(table, expected, check_exact=False, atol=1e-9)
    report = (run / "eval" / "report.md").read_text()
    assert "## Long-tail augmentation (evaluation.labelled_table)" in report
    assert "| real + references + nao |" in report

    # `normguide evaluate` on the finished run: a bad table is refused in one line before any model
    # and the evaluation already written stays; the good one writes the same table again
    written = (run / "eval" / "longtail.parquet").read_bytes()
    frame[frame.label != "digit-two"].to_parquet(root / "no-two.parquet", index=False)
    res = CliRunner().invoke(app, ["evaluate", str(run), "--labelled-table", str(root / "no-two.parquet")],
                             env={"COLUMNS": "200"})
    assert res.exit_code == 2, res.output
    assert [ln for ln in res.output.splitlines() if ln.strip()] == [
        f"error: evaluation.labelled_table: labelled table {str(root / 'no-two.parquet')!r}: concept(s) ['digit-two'] are not among its "
        "labels ['digit-five', 'one', 'seven']"]
    assert (run / "eval" / "longtail.parquet").read_bytes() == written
    res = CliRunner().invoke(app, ["evaluate", str(run)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "long-tail (linear probe on CLIP), rare-class accuracy: real only" in res.output
    pd.testing.assert_frame_equal(pd.read_parquet(run / "eval" / "longtail.parquet"), table)


def _write(root, name, frame):
    frame.to_parquet(root / name, index=False)
    return name


@pytest.mark.parametrize("case, pattern", [
    ("unknown class", r"evaluation.labelled_table: labelled table '.*bad.parquet': concept\(s\) \['digit-five'\] are not among its labels"),
    ("missing column", r"evaluation.labelled_table: labelled table '.*bad.parquet' lacks column\(s\) \['split'\]"),
    ("empty split", r"evaluation.labelled_table: labelled table '.*bad.parquet': needs both train and test rows \(got 16 train, 0 test\)"),
    ("no test images", r"evaluation.labelled_table: labelled table '.*bad.parquet': concept\(s\) \['digit-two'\] have no test images"),
    ("no table", r"evaluation.labelled_table: labelled table '.*bad.parquet' does not exist"),
    ("unknown judge path", r"evaluation.clip_model: model directory '.*no-clip' does not exist"),
])
def test_bad_labelled_input_is_refused_before_the_model_loads(tmp_path, inputs, clip_dir, case, pattern):
    root, frame = inputs
    bad = root / "bad.parquet"
    bad.unlink(missing_ok=True)
    clip = clip_dir
    if case == "unknown class":
        _write(root, "bad.parquet", frame[frame.label != "digit-five"])
    elif case == "missing column":
        _write(root, "bad.parquet", frame.drop(columns=["split"]))
    elif case == "empty split":
        _write(root, "bad.parquet", frame[frame.split == "train"])
    elif case == "no test images":
        _write(root, "bad.parquet", frame[~((frame.label == "digit-two") & (frame.split == "test"))])
    elif case == "unknown judge path":
        _write(root, "bad.parquet", frame)
        clip = str(tmp_path / "no-clip")
    with pytest.raises((ValueError, FileNotFoundError), match=pattern) as err:
        run_dataset(_config(root, tmp_path / "out", clip, table="bad.parquet"), model=never_load)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("run.json"))


def test_labelled_table_without_a_clip_model_is_a_config_error(inputs):
    root, _ = inputs
    with pytest.raises(ValueError, match="evaluation.labelled_table needs evaluation.clip_model"):
        RunConfig.model_validate({"evaluation": {"labelled_table": str(root / "labelled.parquet")}})
