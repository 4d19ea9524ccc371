"""Idempotency, precisely (issue 12): two clean runs of the same configuration, into two output
roots, write byte-identical data files: every image, every seeds file, every manifest part,
``manifest.parquet`` and ``_SUCCESS`` (and the report's figures). Only the records of the run itself differ, and only by
when it ran and where: run.json (``started_at``, ``finished_at``, ``output_root``,
``config.output``, and ``cost``: the generation's measured seconds and what follows from them), and
the dataset card ``README.md`` and ``report/index.md`` (the same times, the output root and the card's
measured "Cost" section in their text). The README's "Interrupted runs, reruns and idempotency" states
this claim; this test checks it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from normguide.config import RunConfig
from normguide.diffusion import load_pipeline
from normguide.pipeline import resolved_run_id, run_dataset
from tests.factories import reference_table

DATA = ("images", "seeds", "manifest")
#: The run's own records: they differ between two runs by time and output root only.
RECORDS = ("run.json", "README.md", "report/index.md")
_COST = re.compile(r"## Cost\n.*?\n(?=## )", re.DOTALL)  # the card's measured section (times, rates)
_ISO = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(\+00:00|Z)?")


@pytest.fixture
def table(tmp_path):
    return reference_table(tmp_path / "in" / "concepts.parquet", (("alpha", 2), ("beta", 3)),
                           seed=lambda cid, i: 5 * i + len(cid))


def _run(table, output: Path) -> Path:
    cfg = RunConfig.model_validate({
        "concepts": str(table), "output": str(output), "model": "demo:sd1",
        "inversion": {"num_inference_steps": 2, "reconstruction": True},
        "generation": {"num_inference_steps": 2, "guidance_scale": 2.0, "batch_size": 2},
        "plan": {"methods": ["nao", "slerp"], "num_images": 3},
    })
    summary = run_dataset(cfg, model=load_pipeline("demo:sd1"))
    assert summary.ok and summary.finalized
    return output / resolved_run_id(cfg)


def _all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_clean_runs_write_byte_identical_data_files(table, tmp_path):
    a, b = _run(table, tmp_path / "a"), _run(table, tmp_path / "b")
    assert a.name == b.name  # the same run id: it comes from the content, not the output
    fa, fb = _all_files(a), _all_files(b)
    assert sorted(fa) == sorted(fb)
    data = [k for k in fa if k.split("/")[0] in DATA or k in ("manifest.parquet", "_SUCCESS")]
    assert {k.split("/")[0] for k in data} == {"images", "seeds", "manifest", "manifest.parquet", "_SUCCESS"}
    assert [k for k in data if fa[k] != fb[k]] == []
    # so is every other file (the report's figures) but the run's own records
    assert [k for k in fa if k not in RECORDS and fa[k] != fb[k]] == []

    ra, rb = json.loads(fa["run.json"]), json.loads(fb["run.json"])
    assert {k for k in ra if ra[k] != rb[k]} <= {"started_at", "finished_at", "output_root", "config", "cost",
                                                 "cost_measured_at"}
    timed = {"generation_seconds", "images_per_s_per_device", "achieved_tflops", "mfu", "usd_per_1000_images"}
    assert {k for k in ra["cost"] if ra["cost"][k] != rb["cost"][k]} <= timed  # FLOPs, images, device: the same
    assert {k for k in ra["config"] if ra["config"][k] != rb["config"][k]} == {"output"}
    for name in set(RECORDS) & set(fa):
        if name == "run.json":
            continue
        norm = [_ISO.sub("<time>", _COST.sub("## Cost <measured>\n\n", f[name].decode()).replace(str(root), "<root>")
                         .replace(str(root.parent), "<out>")) for f, root in ((fa, a), (fb, b))]
        assert norm[0] == norm[1], name
