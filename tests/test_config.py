"""The run configuration: files, overrides, derived run ids, and secrets that never leak."""

import json

import pytest
from pydantic import ValidationError

from normguide.config import RunConfig, load_config


#: A concept table's digest (``TableSnapshot.digest``): the config never reads the table itself.
DIGEST = "0" * 64


def test_defaults_are_valid_and_run_id_is_stable():
    a, b = RunConfig(), RunConfig()
    assert a.run_id_for(DIGEST) == b.run_id_for(DIGEST)
    assert a.run_id_for(DIGEST).startswith("run-") and len(a.run_id_for(DIGEST)) == 16
    assert a.run_id_for("1" * 64) != a.run_id_for(DIGEST)  # another table, another run


def test_run_id_ignores_where_not_what():
    base = RunConfig()
    run_id = base.run_id_for(DIGEST)
    assert base.with_overrides(output="/elsewhere", device="cuda").run_id_for(DIGEST) == run_id
    assert base.with_overrides(**{"generation.batch_size": 7}).run_id_for(DIGEST) == run_id
    assert base.with_overrides(**{"generation.guidance_scale": 2.0}).run_id_for(DIGEST) != run_id
    assert base.with_overrides(run_id="mine").run_id_for(DIGEST) == "mine"


def test_pinned_fixes_the_run_id_and_reads_nothing(tmp_path):
    cfg = RunConfig(concepts=str(tmp_path / "no-such-table.parquet"))  # pure settings: nothing is read
    pinned = cfg.pinned(DIGEST)
    assert pinned.run_id == cfg.run_id_for(DIGEST) and pinned.pinned("1" * 64) is pinned


def test_yaml_and_json_files(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("model: demo\nplan:\n  methods: [nao, slerp]\n  num_images: 3\ngeneration:\n  num_inference_steps: 2\n")
    cfg = load_config(y)
    assert cfg.plan.methods == ("nao", "slerp") and cfg.plan.num_images == 3
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"plan": {"methods": ["random"]}}))
    assert load_config(j).plan.methods == ("random",)


@pytest.mark.parametrize(
    "text, match",
    [
        ("plan:\n  methods: [bogus]\n", "plan.methods"),
        ("plan:\n  num_images: 0\n", "plan.num_images"),
        ("unknown_field: 1\n", "unknown_field"),
        ("plan:\n  t_values: [0.0, 0.5]\n", "strictly between 0 and 1"),
        ("run_id: ../x\n", "run_id must match"),
        ("prompt_template: 'a {thing}'\n", "prompt_template"),
        ("- a\n- b\n", "must hold a mapping"),
        (":\n  - [\n", "not valid YAML"),
    ],
)
def test_bad_files_name_file_and_field(tmp_path, text, match):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as ei:
        load_config(p)
    assert "bad.yaml" in str(ei.value)


def test_missing_file():
    with pytest.raises(ValueError, match="does not exist"):
        load_config("/nonexistent/config.yaml")


def test_secrets_masked_everywhere():
    cfg = RunConfig.model_validate(
        {"storage": {"key": "AKIAEXAMPLE", "secret": "s3cr3t-value", "extra": {"session_password": "pw-123", "anon": False}}}
    )
    public = json.dumps(cfg.public_dict())
    for secret in ("AKIAEXAMPLE", "s3cr3t-value", "pw-123"):
        assert secret not in public
        assert secret not in repr(cfg) and secret not in str(cfg)
    assert cfg.storage.secret.get_secret_value() == "s3cr3t-value"
    # overrides keep the secret usable
    assert cfg.with_overrides(model="demo").storage.secret.get_secret_value() == "s3cr3t-value"


def test_repeated_methods_rejected():
    with pytest.raises(ValidationError, match="must not repeat"):
        RunConfig.model_validate({"plan": {"methods": ["nao", "nao"]}})
