"""Judges: digit-name mapping, the digits judge over a stand-in classifier, and the CLIP judge on a
tiny random CLIP saved to disk (no download)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from normguide.evaluation import ALL, ClipJudge, DigitsJudge, Judge, digit_index, digits_real_test, evaluate

from .conftest import solid


@pytest.mark.parametrize(
    "name,digit",
    [("seven", 7), ("Seven", 7), ("digit seven", 7), ("a handwritten digit seven", 7), ("7", 7), ("digit 0", 0),
     ("the number one", 1), ("NINE", 9)],
)
def test_digit_index(name, digit):
    assert digit_index(name) == digit


@pytest.mark.parametrize("name,what", [("cat", "no digit"), ("seven or eight", "several digits"), ("17", "no digit"), ("", "no digit")])
def test_digit_index_rejects_non_digits_naming_the_concept(name, what):
    with pytest.raises(ValueError, match=what) as err:
        digit_index(name)
    assert repr(name) in str(err.value)


class StandInClassifier:
    """predict_proba: one-hot of a digit encoded in the image's red channel (red // 20), or, for a
    red value of 200 and more ("noise"), near-uniform probabilities whose argmax is 8, as the demo
    classifier answers noise; embed: mean RGB."""

    def predict_proba(self, images):
        p = np.full((len(images), 10), 0.01)
        for i, im in enumerate(images):
            red = im.getpixel((0, 0))[0]
            if red >= 200:
                p[i] = 0.099
                p[i, 8] = 0.109
            else:
                p[i, red // 20] = 0.91
        return p

    def embed(self, images):
        return np.stack([np.asarray(im, dtype=np.float64).reshape(-1, 3).mean(0) for im in images])


def test_digits_judge_labels_and_probs():
    judge = DigitsJudge(StandInClassifier())
    assert isinstance(judge, Judge)
    labels = judge.label_names(["digit seven", "2"])
    assert labels[:2] == ["digit seven", "2"] and len(labels) == 10
    assert set(labels[2:]) == {"zero", "one", "three", "four", "five", "six", "eight", "nine"}
    ims = [solid((20 * 7, 0, 0)), solid((20 * 3, 0, 0))]
    probs = judge.class_probs(ims, labels)
    assert probs.shape == (2, 10)
    assert probs[0, 0] == 0.91 and probs[1, labels.index("three")] == 0.91
    assert judge.embed(ims).shape == (2, 3)
    with pytest.raises(ValueError, match="'cat'"):
        judge.class_probs(ims, ["seven", "cat"])
    with pytest.raises(ValueError, match="both name the digit seven"):
        judge.label_names(["seven", "7"])


def test_digits_judge_recognisability_is_over_all_ten_digits():
    # images of a "three" in a run whose only concepts are seven and two: not recognised as seven
    judge = DigitsJudge(StandInClassifier())
    manifest = pd.DataFrame({"concept_id": ["c7"] * 3 + ["c2"] * 2, "name": ["seven"] * 3 + ["two"] * 2, "method": "m"})
    images = [solid((140, 0, 0)), solid((140, 0, 0)), solid((60, 0, 0)), solid((40, 0, 0)), solid((40, 0, 0))]
    refs = {"c7": [solid((140, 0, 0))], "c2": [solid((40, 0, 0))]}
    out = evaluate(manifest, images, refs, judge).set_index("concept_id")
    assert out.loc["c7", "recognisability"] == pytest.approx(2 / 3)
    assert out.loc["c2", "recognisability"] == 1.0


def test_digits_judge_needs_a_confident_digit():
    judge = DigitsJudge(StandInClassifier())
    assert judge.min_confidence == 0.5
    manifest = pd.DataFrame({"concept_id": ["c8"] * 4 + ["c2"], "name": ["eight"] * 4 + ["two"], "method": "m"})
    images = [solid((160, 0, 0)), solid((250, 0, 0)), solid((250, 0, 0)), solid((250, 0, 0)), solid((40, 0, 0))]
    refs = {"c8": [solid((160, 0, 0))], "c2": [solid((40, 0, 0))]}
    out = evaluate(manifest, images, refs, judge).set_index("concept_id")
    assert out.loc["c8", "recognisability"] == 0.25  # the three "noise" images are no eights
    plain = evaluate(manifest, images, refs, DigitsJudge(StandInClassifier(), min_confidence=0.0))
    assert plain.set_index("concept_id").loc["c8", "recognisability"] == 1.0
    with pytest.raises(ValueError, match="min_confidence"):
        DigitsJudge(min_confidence=1.5)


def test_digits_judge_loads_the_demo_classifier_lazily():
    judge = DigitsJudge()  # constructing imports and loads nothing
    assert judge._classifier is None


def test_digits_judge_threshold_matches_the_demo_classifier():
    from normguide.demo import classifier

    assert DigitsJudge().min_confidence == classifier.MIN_CONFIDENCE


def test_digits_real_test_images():
    from normguide.demo import digits

    out = digits_real_test({"rare-2": "digit two", "c7": "seven"})
    assert list(out) == ["rare-2", "c7"]
    test = digits.load_split("test")
    assert len(out["rare-2"]) == int((test.labels == 2).sum()) > 20
    assert np.array_equal(np.asarray(out["c7"][0]), np.asarray(test.of_class(7).images()[0]))
    with pytest.raises(ValueError, match="'cat'"):
        digits_real_test({"x": "cat"})


# ---- CLIP


def test_clip_judge_missing_path(tmp_path):
    missing = tmp_path / "no-such-clip"
    with pytest.raises(FileNotFoundError, match="no-such-clip"):
        ClipJudge(missing)


def test_clip_judge_not_a_clip_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"empty.*not a CLIP model directory \(no config.json\)"):
        ClipJudge(empty)
    other = tmp_path / "bert"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"bert.*model_type 'bert'"):
        ClipJudge(other)
    afile = tmp_path / "file.bin"
    afile.write_bytes(b"x")
    with pytest.raises(ValueError, match="not a directory"):
        ClipJudge(afile)


def test_clip_judge_without_tokenizer_files(tmp_path, tiny_clip_dir):
    import shutil

    broken = tmp_path / "weights-only"
    broken.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_clip_dir / f, broken / f)
    with pytest.raises(ValueError, match=r"weights-only.*lacks tokenizer files.*and preprocessor_config.json"):
        ClipJudge(broken)
    shutil.copy(tiny_clip_dir / "preprocessor_config.json", broken / "preprocessor_config.json")
    with pytest.raises(ValueError, match=r"weights-only.*lacks tokenizer files"):
        ClipJudge(broken)
    no_weights = tmp_path / "no-weights"
    shutil.copytree(tiny_clip_dir, no_weights)
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"cannot load a CLIP model.*no-weights"):
        ClipJudge(no_weights)


def test_clip_judge_tiny_model(tiny_clip_dir):
    judge = ClipJudge(tiny_clip_dir, batch_size=3)
    assert isinstance(judge, Judge) and "tiny-clip" in judge.name
    ims = [solid((30 * i, 100, 200 - 20 * i), size=24 + i) for i in range(7)]
    feats = judge.embed(ims)
    assert feats.shape == (7, 16)
    assert np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    probs = judge.class_probs(ims, ["cat", "dog", "seven"])
    assert probs.shape == (7, 3) and np.allclose(probs.sum(1), 1.0)
    # batching does not change results; loading twice gives the same model
    again = ClipJudge(tiny_clip_dir, batch_size=32)
    assert np.allclose(again.embed(ims), feats, atol=1e-5)
    assert judge.label_names(["cat", "cat", "dog"]) == ["cat", "dog"]
    assert ClipJudge(tiny_clip_dir, distractors=["thing"]).label_names(["cat"]) == ["cat", "thing"]
    with pytest.raises(ValueError, match="prompt_template"):
        ClipJudge(tiny_clip_dir, prompt_template="a photo")


def test_evaluate_with_clip_judge(tiny_clip_dir):
    judge = ClipJudge(tiny_clip_dir)
    manifest = pd.DataFrame({"concept_id": ["a"] * 4 + ["b"] * 4, "name": ["cat"] * 4 + ["dog"] * 4, "method": "nao"})
    images = [solid((200, 50, 50), noise=20, seed=i) for i in range(4)] + [solid((50, 50, 200), noise=20, seed=9 + i) for i in range(4)]
    refs = {"a": [solid((200, 50, 50), noise=20, seed=20)] * 2, "b": [solid((50, 50, 200), noise=20, seed=21)] * 2}
    out = evaluate(manifest, images, refs, judge)
    assert len(out) == 3
    row = out[out.concept_id == ALL].iloc[0]
    assert 0.0 <= row.recognisability <= 1.0 and -1.0 <= row.ref_similarity <= 1.0
    assert row.vendi >= 1.0
