"""The norm response on a tiny grid of the demo model, and its bad input."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image
from typer.testing import CliRunner

from normguide.evaluation import DigitsJudge
from normguide.evaluation import norm_response as nr


@pytest.fixture(scope="module")
def demo_model():
    from normguide.diffusion.loading import get_pipeline

    return get_pipeline("demo")


def test_norm_response_on_a_tiny_grid_of_the_demo(demo_model):
    from normguide.demo import digits

    refs = digits.reference_images(2, n=2)
    concept = nr.ConceptInput("digit-two", "two", digits.prompt_for(2), refs)
    res = nr.norm_response(demo_model, [concept], DigitsJudge(), radii=(1.0, 0.5), num_random=2, guidance_scale=3.0,
                           num_inference_steps=2, inversion_steps=2, methods=("nao", "lerp", "cog"), batch_size=16)
    c = res.curve
    # one row per (direction, r) for the concept, and the same again as "(all)"
    assert list(c.columns) == list(nr.CURVE_COLUMNS)
    own = c[c.concept_id == "digit-two"]
    assert sorted(zip(own.direction, own.r)) == [("inverted", 0.5), ("inverted", 1.0), ("random", 0.5), ("random", 1.0)]
    assert set(own[own.direction == "random"].n_images) == {2} and set(own[own.direction == "inverted"].n_images) == {2}
    assert len(c[c.concept_id == nr.ALL]) == 4
    assert own.recognisability.between(0, 1).all() and own.diversity.notna().all()
    # methods on the curve: NAO keeps the shell, LERP's centroid (mean of 2) shrinks the inputs' norm
    m = res.methods.set_index("method")
    assert math.isclose(m.loc["nao", "r_centroid"], 1.0, abs_tol=0.02)
    inv_r = res.inversions.r_mean.iloc[0]
    assert m.loc["lerp", "r_centroid"] < inv_r
    # the verdict names the peaks and every method; the plot is a PNG with the image strip
    for word in ("recognisability peaks", "diversity peaks", "nao", "lerp", "cog", "degrade"):
        assert word in res.verdict
    png = nr.plot_norm_response(res)
    img = Image.open(io.BytesIO(png))
    assert img.format == "PNG" and img.width > 600 and img.height > 600


def test_bad_input_empty_grid_and_unknown_judge_path(tmp_path):
    with pytest.raises(ValueError, match="radii: the grid is empty"):
        nr.check_radii([])
    with pytest.raises(ValueError, match="finite and > 0"):
        nr.check_radii([0.5, -1])
    from normguide.cli import app

    missing = tmp_path / "no-such-clip"
    out = CliRunner().invoke(app, ["norm-response", "--judge", str(missing), "--output", str(tmp_path / "out")])
    assert out.exit_code == 2
    lines = [ln for ln in out.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "no-such-clip" in lines[0] and "no such directory" in lines[0]
    out = CliRunner().invoke(app, ["norm-response", "--radii", ",", "--output", str(tmp_path / "out")])
    assert out.exit_code == 2 and "grid is empty" in out.output
    assert not (tmp_path / "out" / "curve.parquet").exists()
