"""The summary tables the card, ``report/index.md`` and ``normguide show`` share (markdown)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from normguide.data.parquet_io import read_frame
from normguide.data.text import printable
from normguide.reporting.records import HEADLINE_METRICS


def cell(value) -> str:
    """A markdown table cell: ``|`` escaped, control characters escaped (``\\n``, ``\\u202e``)."""
    return printable(value).replace("|", "\\|")


def table(header: Sequence[str], rows: Sequence[Sequence], *, right_from: int = 1) -> list[str]:
    """Markdown table lines; columns from ``right_from`` on are right-aligned (numbers)."""
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    return lines + ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]


def counts_by_concept(manifest: pd.DataFrame) -> dict[str, tuple[str, dict[str, int]]]:
    """concept_id -> (name, {method: images}), in the manifest's order."""
    out: dict[str, tuple[str, dict[str, int]]] = {}
    for cid, name, method in zip(manifest["concept_id"], manifest["name"], manifest["method"]):
        _, per = out.setdefault(str(cid), (str(name), {}))
        per[str(method)] = per.get(str(method), 0) + 1
    return out


def counts_markdown(counts: Mapping[str, tuple[str, Mapping[str, int]]], *, references: Mapping[str, int] | None = None) -> list[str]:
    """Images per concept (rows) and method (columns), with totals."""
    methods = list(dict.fromkeys(m for _, per in counts.values() for m in per))
    header = ["concept", "name", *(["references"] if references is not None else []), *methods, "total"]
    rows = []
    for cid, (name, per) in counts.items():
        refs = [references.get(cid, 0)] if references is not None else []
        rows.append([f"`{cid}`", name, *refs, *(per.get(m, 0) for m in methods), sum(per.values())])
    totals = [sum(per.get(m, 0) for _, per in counts.values()) for m in methods]
    refs_total = [sum(references.values())] if references is not None else []
    rows.append(["**all**", "", *refs_total, *totals, sum(totals)])
    return table(header, rows, right_from=2)


def headline_evaluation(metrics_parquet: bytes) -> dict[str, dict[str, float | None]]:
    """method -> {metric: value} from the evaluation's "(all)" rows (:data:`HEADLINE_METRICS`)."""
    from normguide.evaluation import ALL

    metrics = read_frame(metrics_parquet)
    overall = metrics[metrics["concept_id"] == ALL]
    out = {}
    for _, row in overall.iterrows():
        out[str(row["method"])] = {c: (None if pd.isna(row[c]) else float(row[c]))
                                   for c in HEADLINE_METRICS if c in row.index}
    return out


def _fmt(v: float | None, metric: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if metric == "seed_zscore_mean":
        return f"{v:+.2f}"
    return f"{v:.2f}" if metric == "vendi" else f"{v:.3f}"


def evaluation_markdown(evaluation: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    """The headline metrics per method (rows) as a markdown table."""
    metrics = [m for m in HEADLINE_METRICS if any(m in v for v in evaluation.values())]
    rows = [[f"`{method}`", *(_fmt(vals.get(m), m) for m in metrics)] for method, vals in evaluation.items()]
    return table(["method", *metrics], rows)


#: One line per headline metric, for readers of the card.
METRIC_MEANINGS = {
    "recognisability": "fraction of images the judge recognises as their concept (higher is better)",
    "none_of_these": "fraction of images the judge abstains on: no concept at its confidence threshold, or features at the similarity floor (noise, blank) (lower is better)",
    "coverage": "fraction of real images with a generated image nearby: diversity that stays real (higher is better)",
    "tstr_accuracy": "accuracy on real test images of a classifier trained only on these synthetic images (higher is better)",
    "vendi": "effective number of distinct images per concept (higher is more diverse)",
    "seed_zscore_mean": "mean seed-norm z-score under the N(0, I) prior (near 0 = seeds the model was trained on)",
}
