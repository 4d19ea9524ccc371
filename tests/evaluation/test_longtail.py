"""Evaluation that can see long-tail value, on known cases: the references scored as themselves,
real images near the ceiling, noise near chance / no gain; the labelled-table linear probe on a
tiny CLIP; bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from normguide.evaluation import REFERENCES, DigitsJudge, digits_real_test, evaluate
from normguide.evaluation import longtail as lt
from normguide.evaluation.metrics import pixel_features


def _noise(n, seed=0, size=32):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8), "RGB") for _ in range(n)]


def test_references_row_scores_the_references_themselves_and_noise_near_chance():
    from normguide.demo import digits

    names = {"digit-two": "two", "digit-five": "five"}
    refs = {"digit-two": digits.reference_images(2, n=5), "digit-five": digits.reference_images(5, n=5)}
    noise = _noise(10)
    manifest = pd.DataFrame({"concept_id": ["digit-two"] * 5 + ["digit-five"] * 5, "name": ["two"] * 5 + ["five"] * 5,
                             "method": "noise"})
    out = evaluate(manifest, noise, refs, DigitsJudge(), digits_real_test(names), names, include_references=True)
    overall = out[out.concept_id == "(all)"].set_index("method")
    assert list(overall.index) == ["noise", REFERENCES]
    per = out[(out.concept_id != "(all)") & (out.method == REFERENCES)]
    assert (per.n_images == 5).all() and per.seed_norm_mean.isna().all()
    ref, nz = overall.loc[REFERENCES], overall.loc["noise"]
    assert ref.recognisability >= 0.9 and nz.recognisability <= 0.1
    assert ref.tstr_accuracy >= 0.85 and nz.tstr_accuracy <= 0.65  # 2 classes: chance 0.5
    with pytest.raises(ValueError, match="reserved"):
        evaluate(manifest.assign(method=REFERENCES), noise, refs, DigitsJudge(), None, names, include_references=True)


def test_longtail_protocol_on_the_demo_digits_real_near_ceiling_noise_adds_nothing():
    (tr_im, tr_y), (te_im, te_y), (ex_im, ex_y) = lt.digits_longtail(extra_per_class=32)
    assert sorted(pd.Series(tr_y).value_counts()[["two", "five", "eight"]]) == [8, 8, 8]
    assert len(set(pd.Series(te_y).value_counts())) <= 3  # balanced (about 35 a class)
    train = lt.Labelled.of(pixel_features(tr_im), tr_y)
    test = lt.Labelled.of(pixel_features(te_im), te_y)
    ex = lt.Labelled.of(pixel_features(ex_im), ex_y)
    first = np.concatenate([np.flatnonzero(ex.y == c)[:16] for c in ("two", "five", "eight")])
    second = np.setdiff1d(np.arange(len(ex)), first)
    extra = lt.Labelled(ex.x[first], ex.y[first])  # the ceiling: 16 more real images a rare digit
    real_method = lt.Labelled(ex.x[second], ex.y[second])  # a "method" whose images are other real digits
    rare = ["two", "five", "eight"]
    noise = lt.Labelled.of(pixel_features(_noise(48, seed=1)), rare * 16)
    # the SVM only (the linear classifier is exercised on CLIP features below; its fits are slow)
    table = lt.augmentation_table(train, test, rare, synthetic={"real": real_method, "noise": noise}, extra_real=extra,
                                  classifiers=["svm"])
    t = table.set_index(["training_set", "classifier"])
    for clf in ["svm"]:
        base = t.loc[("real only", clf), "rare_accuracy"]
        ceiling = t.loc[("real + extra real", clf), "rare_accuracy"]
        assert ceiling > base + 0.05, (clf, base, ceiling)
        assert t.loc[("real + real", clf), "rare_accuracy"] >= ceiling - 0.1  # real images land near the ceiling
        # noise adds no knowledge of the digits: far below the ceiling (what it adds, about +0.07
        # here, is only more rare labels shifting the classifier's decision, as re-weighting would)
        assert t.loc[("real + noise", clf), "rare_accuracy"] <= min(base + 0.1, ceiling - 0.1)
    assert set(table.kind) == {"baseline", "ceiling", "method"}
    assert table.overall_accuracy.between(0.5, 1).all()
    with pytest.raises(ValueError, match="have no test images"):
        lt.augmentation_table(train, test, ["okapi"])


def test_labelled_table_linear_probe_on_a_tiny_clip_and_unknown_classes(tmp_path, tiny_clip_dir):
    from normguide.demo import digits
    from normguide.evaluation import ClipJudge

    rows = []
    for c in (1, 2, 7):
        for i, im in enumerate(digits.reference_images(c, n=10)):
            p = tmp_path / f"{c}-{i}.png"
            im.save(p)
            rows.append({"image_uri": str(p), "label": digits.CLASS_NAMES[c], "split": "train" if i < 6 else "test"})
    frame = pd.DataFrame(rows)
    judge = ClipJudge(tiny_clip_dir)
    syn = ([im for im in digits.reference_images(2, n=4)], ["two"] * 4)
    out = lt.probe_from_table(frame, source="labels.parquet", read_image=Image.open, embed=judge.embed, rare=["two"],
                              synthetic={"nao": syn}, references=syn)
    assert list(out.training_set) == ["real only", "real + references", "real, re-weighted", "real + nao",
                                      "real + references + nao"]
    assert out.rare_accuracy.between(0, 1).all() and (out.classifier == "linear").all()
    with pytest.raises(ValueError, match=r"labelled table labels.parquet: concept\(s\) \['okapi'\] are not among its labels"):
        lt.probe_from_table(frame, source="labels.parquet", read_image=Image.open, embed=judge.embed, rare=["okapi"])
    with pytest.raises(ValueError, match="missing column"):
        lt.labelled_table(frame.drop(columns=["split"]), source="labels.parquet", concepts=["two"])
