"""Flow tests run under one session-scoped Prefect test harness (a real, temporary Prefect API)."""

from pathlib import Path

import pytest

from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from tests.helpers import make_reference


@pytest.fixture(scope="session", autouse=True)
def _prefect(prefect_api):
    """Every flow test runs against the session's Prefect test harness (tests/conftest.py)."""
    yield prefect_api


@pytest.fixture
def concept_dir(tmp_path):
    """A concept table with two concepts (3 and 2 references) in tmp_path/in."""
    root = tmp_path / "in"
    rows = []
    for cid, n in (("alpha", 3), ("beta", 2)):
        refs = [f"refs/{cid}/{i}.png" for i in range(n)]
        for i, r in enumerate(refs):
            make_reference(root / r, seed=1000 * len(cid) + 10 * ord(cid[0]) + i)
        rows.append({"concept_id": cid, "name": cid, "reference_uris": refs, "prompt": None, "num_images": None})
    write_concept_table(rows, root / "concepts.parquet")
    return root


def tiny_config(concepts: Path | str, output: Path | str, **overrides) -> RunConfig:
    base = RunConfig.model_validate(
        {
            "concepts": str(concepts),
            "output": str(output),
            "model": "demo",
            "inversion": {"num_inference_steps": 2, "reconstruction": True},
            "generation": {"num_inference_steps": 2, "guidance_scale": 2.0, "batch_size": 2},
            "plan": {"methods": ["nao"], "num_images": 3},
        }
    )
    return base.with_overrides(**overrides)
