"""``evaluate`` end to end with a transparent stand-in judge (colour features), plus its input errors."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from normguide.evaluation import ALL, COLUMNS, Judge, evaluate

from .conftest import solid

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}


class ColourJudge:
    """Features: mean and std of each RGB channel; class probabilities: softmax of the channel
    means of the named colours (unknown names get a constant low logit)."""

    name = "colour judge (test)"

    def __init__(self):
        self.calls = []

    def embed(self, images):
        self.calls.append(("embed", len(images)))
        if not images:
            return np.zeros((0, 6))
        arr = [np.asarray(im.convert("RGB"), dtype=np.float64).reshape(-1, 3) / 255.0 for im in images]
        return np.stack([np.concatenate([a.mean(0), a.std(0)]) for a in arr])

    def class_probs(self, images, class_names):
        self.calls.append(("class_probs", len(images)))
        means = self.embed(images)[:, :3]
        channel = {"red": 0, "green": 1, "blue": 2}
        logits = np.stack([means[:, channel[n]] if n in channel else np.full(len(images), 0.2) for n in class_names], 1)
        e = np.exp(10 * logits)
        return e / e.sum(1, keepdims=True)


def _run(n=8, methods=("good", "grey")):
    rows, images = [], []
    seed = 0
    for cid in COLOURS:
        for m in methods:
            for i in range(n):
                rgb = COLOURS[cid] if m == "good" else (128, 128, 128)
                seed += 1
                images.append(solid(rgb, noise=25, seed=seed))
                rows.append({"concept_id": f"c-{cid}", "name": cid, "method": m, "seed_zscore": float(i - n / 2),
                             "seed_norm": 16.0 + i, "reconstruction_error": 0.01 if m == "good" else None})
    manifest = pd.DataFrame(rows)
    refs = {f"c-{c}": [solid(rgb, noise=25, seed=100 + i) for i in range(4)] for c, rgb in COLOURS.items()}
    test = {f"c-{c}": [solid(rgb, noise=25, seed=200 + i) for i in range(12)] for c, rgb in COLOURS.items()}
    return manifest, images, refs, test


def test_colour_judge_is_a_judge():
    assert isinstance(ColourJudge(), Judge)


def test_evaluate_structure_and_known_cases():
    manifest, images, refs, test = _run()
    judge = ColourJudge()
    out = evaluate(manifest, images, refs, judge, real_test=test)
    assert tuple(out.columns) == COLUMNS
    assert len(out) == 3 * 2 + 2
    per = out[out.concept_id != ALL]
    assert list(zip(per.concept_id, per.method))[:2] == [("c-red", "good"), ("c-red", "grey")]
    assert list(out[out.concept_id == ALL].method) == ["good", "grey"]
    assert (per.n_images == 8).all() and (per.n_real == 12).all() and (per.prdc_real == "real_test").all()
    assert set(per.name) == set(COLOURS)

    good = out[(out.concept_id == ALL) & (out.method == "good")].iloc[0]
    grey = out[(out.concept_id == ALL) & (out.method == "grey")].iloc[0]
    assert good.n_images == 24 and good.n_real == 36
    assert good.recognisability == 1.0 and grey.recognisability < 0.6  # chance 1/3
    assert good.precision > 0.6 and good.coverage > 0.6 and good.recall > 0.6
    assert grey.precision == 0.0 and grey.coverage == 0.0
    assert good.ref_similarity > grey.ref_similarity
    assert good.tstr_accuracy == 1.0 and grey.tstr_accuracy < 0.6
    assert good.seed_zscore_mean == pytest.approx(-0.5) and good.reconstruction_error_mean == pytest.approx(0.01)
    assert math.isnan(grey.reconstruction_error_mean)
    # "(all)" = unweighted mean over concepts
    assert good.vendi == pytest.approx(per[per.method == "good"].vendi.mean())
    # one embed call per image set (generated, references, test), one class_probs call
    assert [c for c, _ in judge.calls if c == "class_probs"] == ["class_probs"]


def test_evaluate_is_deterministic():
    manifest, images, refs, test = _run(n=5)
    a = evaluate(manifest, images, refs, ColourJudge(), real_test=test)
    b = evaluate(manifest, images, refs, ColourJudge(), real_test=test)
    pd.testing.assert_frame_equal(a, b)


def test_without_real_test_prdc_uses_references_and_tstr_is_nan():
    manifest, images, refs, _ = _run(n=5)
    out = evaluate(manifest, images, refs, ColourJudge())
    assert (out.prdc_real == "references").all() and (out[out.concept_id != ALL].n_real == 4).all()
    assert out.tstr_accuracy.isna().all()
    assert out.precision.notna().all()


def test_partial_real_test_and_names_override_and_mixed():
    manifest, images, refs, test = _run(n=5, methods=("good",))
    test = {"c-red": test["c-red"]}
    out = evaluate(manifest.drop(columns=["name"]), images, refs, ColourJudge(), real_test=test,
                   names={"c-red": "red", "c-green": "green", "c-blue": "blue"})
    per = out[out.concept_id != ALL].set_index("concept_id")
    assert per.loc["c-red", "prdc_real"] == "real_test" and per.loc["c-green", "prdc_real"] == "references"
    assert out[out.concept_id == ALL].prdc_real.iloc[0] == "mixed"
    assert per.loc["c-red", "tstr_accuracy"] == 1.0 and math.isnan(per.loc["c-green", "tstr_accuracy"])


def test_names_default_to_concept_ids():
    manifest, images, refs, _ = _run(n=3, methods=("good",))
    manifest = manifest.drop(columns=["name"])
    out = evaluate(manifest, images, refs, ColourJudge())
    assert list(out.name[:3]) == ["c-red", "c-green", "c-blue"]
    assert out.recognisability.notna().all()


def test_missing_seed_columns_give_nan():
    manifest, images, refs, _ = _run(n=3, methods=("good",))
    out = evaluate(manifest[["concept_id", "name", "method"]], images, refs, ColourJudge())
    assert out.seed_zscore_mean.isna().all() and out.reconstruction_error_mean.isna().all()


def test_empty_manifest():
    out = evaluate(pd.DataFrame({"concept_id": [], "method": []}), [], {}, ColourJudge())
    assert out.empty and tuple(out.columns) == COLUMNS


def test_bad_inputs():
    manifest, images, refs, _ = _run(n=2, methods=("good",))
    with pytest.raises(ValueError, match="row-aligned"):
        evaluate(manifest, images[:-1], refs, ColourJudge())
    with pytest.raises(ValueError, match=r"no reference images for concept\(s\) \['c-blue'\]"):
        evaluate(manifest, images, {k: v for k, v in refs.items() if k != "c-blue"}, ColourJudge())
    with pytest.raises(ValueError, match="lacks column"):
        evaluate(manifest.drop(columns=["method"]), images, refs, ColourJudge())
    with pytest.raises(ValueError, match="tstr_features"):
        evaluate(manifest, images, refs, ColourJudge(), tstr_features="embeddings")
    with pytest.raises(TypeError, match="DataFrame"):
        evaluate(manifest.to_dict("records"), images, refs, ColourJudge())


def test_tstr_on_judge_features():
    manifest, images, refs, test = _run(n=5)
    out = evaluate(manifest, images, refs, ColourJudge(), real_test=test, tstr_features="judge")
    allrows = out[out.concept_id == ALL].set_index("method")
    assert allrows.loc["good", "tstr_accuracy"] == 1.0
