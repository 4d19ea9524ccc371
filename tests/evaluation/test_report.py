"""The markdown report and the PNG plot of an evaluation frame."""

from __future__ import annotations

import math
import sys

import numpy as np
import pandas as pd

from normguide.evaluation import ALL, COLUMNS, METRIC_COLUMNS, leaders, plot_metrics, report_markdown


def _frame() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for cid, name in (("c2", "two"), ("c5", "five")):
        for j, m in enumerate(("nao", "slerp", "random")):
            row = {"concept_id": cid, "name": name, "method": m, "n_images": 10, "n_real": 25, "prdc_real": "real_test",
                   "n_at_floor": 0}
            row.update({c: float(rng.uniform(0.2, 0.8)) for c in METRIC_COLUMNS})
            row["recognisability"] = 0.9 - 0.2 * j
            row["vendi"] = 3.0 + j
            if m == "random":
                row["reconstruction_error_mean"] = math.nan
            rows.append(row)
    per = pd.DataFrame(rows)
    alls = []
    for m in ("nao", "slerp", "random"):
        sub = per[per.method == m]
        row = {"concept_id": ALL, "name": ALL, "method": m, "n_images": 20, "n_real": 50, "prdc_real": "real_test",
               "n_at_floor": 0}
        row.update({c: float(sub[c].mean()) for c in METRIC_COLUMNS})
        alls.append(row)
    return pd.concat([per, pd.DataFrame(alls)], ignore_index=True)[list(COLUMNS)]


def test_leaders():
    lead = leaders(_frame())
    assert lead["recognisability"] == (["nao"], 0.9)
    assert lead["vendi"][0] == ["random"]
    assert "seed_zscore_mean" not in lead  # descriptive, no direction


def test_report_markdown():
    text = report_markdown(_frame(), run_id="run-42", judge_name="digits classifier")
    assert text.startswith("# Evaluation of run `run-42`")
    assert "digits classifier" in text
    for heading in ("## Which method leads", "## Recognisability", "## Fidelity and diversity", "## Downstream value", "## Seed statistics"):
        assert heading in text
    assert "| recognisability | nao | 0.900 |" in text
    assert "- **coverage**: " in text  # one line of meaning per metric
    assert "held-out real test images" in text
    assert "0.900 ± 0.000" in text  # nao's recognisability across two concepts
    assert "| c5 | five | random | 10 |" in text
    # every table row has as many cells as its header
    for block in text.split("\n\n"):
        rows = [ln for ln in block.splitlines() if ln.startswith("|")]
        if rows:
            assert len({ln.count(" | ") for ln in rows}) == 1, block


def test_report_handles_nan_and_empty():
    frame = _frame()
    frame["tstr_accuracy"] = math.nan
    text = report_markdown(frame)
    assert text.startswith("# Evaluation\n")
    assert "| tstr_accuracy | n/a (not measured) | – |" in text
    assert "No images" in report_markdown(frame.iloc[0:0])


def test_plot_metrics_png_deterministic():
    frame = _frame()
    png = plot_metrics(frame)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert plot_metrics(frame) == png
    frame.loc[frame.method == "random", "tstr_accuracy"] = math.nan
    assert plot_metrics(frame)[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_metrics(frame.iloc[0:0])[:4] == b"\x89PNG"
    assert plot_metrics(frame, title="run r1") != plot_metrics(frame)


def test_importing_evaluation_is_light():
    import subprocess

    code = (
        "import sys, normguide.evaluation; "
        "print(sorted(m for m in ('torch', 'transformers', 'matplotlib', 'sklearn') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_leader_is_shown_against_the_references_only_baseline():
    """The references row never leads, but the report shows its value beside the leader and says
    plainly where the leading method does not beat it."""
    frame = _frame()
    refs = frame[frame.method == "nao"].copy()
    refs["method"] = "references"
    refs["recognisability"] = 0.95  # above nao's 0.9: the baseline wins
    refs["vendi"] = 1.0             # below every method's: the leader beats it
    text = report_markdown(pd.concat([frame, refs], ignore_index=True), run_id="r")
    assert leaders(pd.concat([frame, refs], ignore_index=True))["recognisability"] == (["nao"], 0.9)
    assert "| metric | best method | value | references alone | leader vs references |" in text
    assert "| recognisability | nao | 0.900 | 0.950 | does not beat |" in text
    assert "| vendi | random | 5.00 | 1.00 | beats |" in text
