"""One small finished run for the reporting tests (made once per session).

The real local driver on the random-weight ``demo:sd1`` build (2 steps: its images are noise, the
layout is what is tested), two digit concepts with two real reference digits each, methods
``nao`` and ``random``, three images each, evaluated by the demo's digit judge.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from normguide.demo import digits
from normguide.pipeline import RunContext, output_root, run_dataset

METHODS = ("nao", "random")
NUM_IMAGES = 3
REFERENCES = 2


@dataclass
class FinishedRun:
    config: RunConfig
    root: Path

    def context(self, root: Path | None = None) -> RunContext:
        """A context on this run's files, or on a copy of them at ``root``."""
        from normguide.data.storage import Storage

        return RunContext.create(self.config, storage=Storage.open(str(root or self.root)))

    def copy(self, dest: Path) -> Path:
        shutil.copytree(self.root, dest)
        return dest


def make_run(tmp: Path, *, model="demo:sd1") -> FinishedRun:
    rows = []
    for label in (2, 5):
        name = digits.CLASS_NAMES[label]
        refs = []
        for i, im in enumerate(digits.reference_images(label, n=REFERENCES)):
            im.save(tmp / f"{name}-{i}.png")
            refs.append(f"{name}-{i}.png")
        rows.append({"concept_id": f"digit-{name}", "name": name, "reference_uris": refs})
    write_concept_table(rows, tmp / "concepts.parquet")
    cfg = RunConfig.model_validate({
        "concepts": str(tmp / "concepts.parquet"), "output": str(tmp / "out"), "model": model,
        "inversion": {"num_inference_steps": 2, "reconstruction": False},
        "generation": {"num_inference_steps": 2, "batch_size": 6},
        "plan": {"methods": list(METHODS), "num_images": NUM_IMAGES},
        "evaluation": {"judge": "digits"},
    })
    summary = run_dataset(cfg)
    assert summary.ok and summary.finalized and summary.evaluation is not None, summary
    return FinishedRun(cfg, Path(output_root(cfg)))


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> FinishedRun:
    """The run, made once for the whole folder (about 20 s); tests that change files work on a copy."""
    return make_run(tmp_path_factory.mktemp("reporting-run"))
