"""Settings that make no sense are refused up front, naming the field and the value."""

import re

import pytest
from pydantic import ValidationError

from normguide.config import RunConfig


@pytest.mark.parametrize("section", ["generation", "inversion"])
@pytest.mark.parametrize("value", [0.5, 0.0, -1.0, 1e308, 100.5, float("inf"), float("nan")])
def test_degenerate_guidance_refused(section, value):
    with pytest.raises(ValidationError, match=rf"{section}\.guidance_scale must be between 1\.0.*got {re.escape(repr(value))}"):
        RunConfig.model_validate({section: {"guidance_scale": value}})
    with pytest.raises(ValueError, match=rf"{section}\.guidance_scale"):
        RunConfig().with_overrides(**{f"{section}.guidance_scale": value})


@pytest.mark.parametrize("value", [1.0, 1.5, 7.5, 100.0])
def test_sane_guidance_accepted(value):
    cfg = RunConfig.model_validate({"generation": {"guidance_scale": value}, "inversion": {"guidance_scale": value}})
    assert cfg.generation.guidance_scale == cfg.inversion.guidance_scale == value
