"""No credential, at any depth of storage.extra or as URL userinfo, reaches what a run writes or
logs, or a Prefect flow-run parameter."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.encoders import jsonable_encoder

from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from normguide.data.storage.options import secret_values, storage_options_for
from normguide.pipeline import output_root, run_dataset
from tests.helpers import make_reference

PLANTED = ("PlantedDeepSecret", "PlantedTopPassword", "PlantedEndpointPw", "PlantedProxyPw",
           "PlantedSessionTok", "PlantedListKey")


def _secret_config(table, output) -> RunConfig:
    return RunConfig.model_validate({
        "concepts": str(table), "output": str(output), "model": "demo:sd1",
        "inversion": {"num_inference_steps": 2, "reconstruction": False},
        "generation": {"num_inference_steps": 2, "guidance_scale": 2.0, "batch_size": 2},
        "plan": {"methods": ["nao"], "num_images": 2},
        "storage": {
            "endpoint_url": "http://planted-user:PlantedEndpointPw@127.0.0.1:9",
            "extra": {
                "client_kwargs": {"aws_secret_access_key": "PlantedDeepSecret", "region_name": "x"},
                "password": "PlantedTopPassword",
                "config_kwargs": {"proxies": {"https": "http://proxyuser:PlantedProxyPw@proxy:3128"},
                                  "Session_TOKEN": "PlantedSessionTok"},
                "listed": [{"ApiKey": "PlantedListKey"}],
                "anon": False,
            },
        },
    })


@pytest.fixture
def table(tmp_path):
    refs = [str(make_reference(tmp_path / "in" / f"{i}.png", seed=i)) for i in range(2)]
    write_concept_table([{"concept_id": "alpha", "name": "alpha", "reference_uris": refs}], tmp_path / "in" / "c.parquet")
    return tmp_path / "in" / "c.parquet"


def test_public_dict_masks_credentials_at_any_depth(table, tmp_path):
    cfg = _secret_config(table, tmp_path / "out")
    for form in (json.dumps(cfg.public_dict()), json.dumps(jsonable_encoder(cfg)), cfg.model_dump_json(), repr(cfg)):
        assert not [s for s in PLANTED if s in form], form
    public = cfg.public_dict()["storage"]
    assert public["endpoint_url"] == "http://127.0.0.1:9"
    assert public["extra"]["client_kwargs"] == {"aws_secret_access_key": "**********", "region_name": "x"}
    assert public["extra"]["anon"] is False
    # the run itself still gets the real values
    assert cfg.storage.extra["client_kwargs"]["aws_secret_access_key"] == "PlantedDeepSecret"
    assert "PlantedEndpointPw" in cfg.storage.endpoint_url
    assert set(cfg.inline_secrets()) == {
        "storage.endpoint_url (user:password@ in the URL)", "storage.extra.client_kwargs.aws_secret_access_key",
        "storage.extra.password", "storage.extra.config_kwargs.proxies.https (user:password@ in the URL)",
        "storage.extra.config_kwargs.Session_TOKEN", "storage.extra.listed[0].ApiKey",
    }
    # messages are scrubbed of every one of them
    found = secret_values(storage_options_for("s3://b/k", cfg.storage))
    assert {"PlantedDeepSecret", "PlantedTopPassword", "PlantedEndpointPw", "PlantedProxyPw"} <= set(found)


def test_a_run_writes_and_logs_no_planted_secret(table, tmp_path, caplog):
    cfg = _secret_config(table, tmp_path / "out")
    with caplog.at_level(logging.DEBUG):
        summary = run_dataset(cfg)
    assert summary.ok and summary.finalized
    written = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.name == "run.json" for p in written) and len(written) > 5
    for path in written:
        data = path.read_bytes()
        assert not [s for s in PLANTED if s.encode() in data], path
    logs = caplog.text + "".join(str(r.args) for r in caplog.records)
    assert not [s for s in PLANTED if s in logs]
    assert output_root(cfg).startswith(str(tmp_path))


def test_prefect_driver_refuses_credentials_as_parameters(table, tmp_path):
    from typer.testing import CliRunner

    import yaml
    from normguide.cli import app

    raw = {"concepts": str(table), "output": str(tmp_path / "out"),
           "storage": {"extra": {"client_kwargs": {"aws_secret_access_key": "PlantedDeepSecret"}}}}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(raw))
    res = CliRunner().invoke(app, ["run", "--prefect", "--config", str(path)])
    assert res.exit_code == 2, res.output
    assert "storage.extra.client_kwargs.aws_secret_access_key" in res.output
    assert "aws_credentials_block" in res.output and "PlantedDeepSecret" not in res.output
    assert not (tmp_path / "out").exists()
    # the flow itself refuses them too (a deployment or API caller), before anything is written
    from normguide.flows.generate_dataset import generate_dataset

    cfg = _secret_config(table, tmp_path / "out")
    with pytest.raises(ValueError, match=r"storage\.extra\.password.*environment"):
        generate_dataset.fn(config=cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("field", ["key", "secret", "token"])
def test_flow_refuses_storage_key_secret_and_token_as_parameters(table, tmp_path, field):
    """Credentials never travel as flow parameters, not even the masked SecretStr fields: the
    flow gets a reference (environment, profile, prefect-aws block) and resolves it on the worker."""
    from normguide.flows.generate_dataset import generate_dataset

    cfg = RunConfig.model_validate({"concepts": str(table), "output": str(tmp_path / "out"), "model": "demo:sd1",
                                    "storage": {field: "PlantedParamSecret"}})
    assert cfg.parameter_secrets() == [f"storage.{field}"]
    with pytest.raises(ValueError, match=rf"storage\.{field}.*environment") as info:
        generate_dataset.fn(config=cfg)
    assert "PlantedParamSecret" not in str(info.value)
    assert not (tmp_path / "out").exists()
