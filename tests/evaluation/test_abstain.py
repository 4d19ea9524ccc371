"""The evaluation abstains: images whose features say nothing of the references (noise, blank)
are never counted as recognised, whatever the judge's probabilities; the judge's confidence and
a "none of these" rate are reported next to recognisability."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from normguide.demo import digits
from normguide.evaluation import ALL, COLUMNS, DigitsJudge, evaluate, report_markdown

R = digits.RESOLUTION


def _junk(n_noise: int = 4) -> dict[str, Image.Image]:
    rng = np.random.default_rng(0)
    out = {"white": Image.new("RGB", (R, R), (255, 255, 255)), "black": Image.new("RGB", (R, R), (0, 0, 0)),
           "grey": Image.new("RGB", (R, R), (128, 128, 128))}
    for i in range(n_noise):  # grey noise, as a 5-step run draws, and full-range noise
        sd = 12 if i % 2 == 0 else 90
        out[f"noise{i}"] = Image.fromarray(np.clip(128 + rng.normal(0, sd, (R, R, 3)), 0, 255).astype(np.uint8))
    return out


class ConfidentOnAnything:
    """A digit classifier that is sure every image is a two, and whose ReLU features are zero for
    images with no strokes (std below 40): the failure the demo judge showed on a 5-step run
    (recognisability 1.000, similarity 0.000)."""

    def __init__(self):
        from normguide.demo.classifier import load_digit_classifier

        self.real = load_digit_classifier()

    def predict_proba(self, images):
        p = np.full((len(images), 10), 0.001)
        p[:, 2] = 0.991
        return p

    def embed(self, images):
        feats = np.asarray(self.real.embed(list(images)), dtype=np.float64)
        flat = np.array([np.asarray(im.convert("L"), dtype=float).std() < 40 for im in images])
        feats[flat] = 0.0
        return feats


def _frame(images: list[Image.Image], method: str) -> pd.DataFrame:
    return pd.DataFrame({"concept_id": "digit-two", "name": "two", "method": [method] * len(images)})


@pytest.fixture(scope="module")
def scored():
    real = digits.reference_images(2, n=10)
    junk = list(_junk().values())
    manifest = pd.concat([_frame(real[5:], "real"), _frame(junk, "junk")], ignore_index=True)
    refs = {"digit-two": real[:5]}
    return {name: evaluate(manifest, real[5:] + junk, refs, judge).set_index("method")
            for name, judge in (("demo", DigitsJudge()), ("confident", DigitsJudge(ConfidentOnAnything())))}


@pytest.mark.parametrize("judge", ["demo", "confident"])
def test_noise_and_blank_images_are_never_recognised(scored, judge):
    per = scored[judge]
    per = per[per.concept_id != ALL]
    junk, real = per.loc["junk"], per.loc["real"]
    assert junk.recognisability == 0.0  # today, with the confident judge: 1.0
    assert junk.none_of_these == 1.0 and junk.n_at_floor == junk.n_images == 7
    assert real.recognisability == 1.0 and real.none_of_these == 0.0 and real.n_at_floor == 0
    assert real.confidence > 0.9


def test_confidence_and_abstention_are_reported(scored):
    out = scored["demo"].reset_index()
    assert set(out.columns) == set(COLUMNS) and {"confidence", "none_of_these", "n_at_floor"} <= set(COLUMNS)
    assert COLUMNS[-1] == "n_at_floor"  # added after the earlier columns: readers by name are unaffected
    assert out.loc[out.method == "junk", "confidence"].iloc[0] < 0.5  # the demo judge is unsure of noise
    text = report_markdown(out, run_id="r", judge_name="digits")
    assert "- 7 image(s) at the similarity floor" in text and "**none_of_these**" in text
