"""The run config's ``inversion.inverter``: validated against the inverter registry; unset, it
leaves the run id of every existing configuration unchanged."""

import pytest

from normguide.config import RunConfig
from normguide.diffusion.inverters import INVERTER_NAMES


def test_an_unknown_inverter_is_refused_naming_the_field_and_the_known_ones():
    with pytest.raises(ValueError, match=r"inversion\.inverter: unknown inverter 'rf-inversion'.*flow-euler"):
        RunConfig.model_validate({"inversion": {"inverter": "rf-inversion"}})


@pytest.mark.parametrize("name", INVERTER_NAMES)
def test_every_registered_inverter_is_accepted(name):
    assert RunConfig.model_validate({"inversion": {"inverter": name}}).inversion.inverter == name


def test_unset_keeps_the_content_settings_and_a_named_one_enters_them():
    unset = RunConfig().content_dict()
    assert "inverter" not in unset["inversion"]
    named = RunConfig.model_validate({"inversion": {"inverter": "flow-midpoint"}}).content_dict()
    assert named["inversion"]["inverter"] == "flow-midpoint"
    assert {k: v for k, v in named["inversion"].items() if k != "inverter"} == unset["inversion"]
