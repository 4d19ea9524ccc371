"""The evaluation's human outputs: a markdown report and a PNG of the main metrics per method."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd

from normguide.evaluation.evaluate import ALL, METRICS, MetricInfo

#: The metrics drawn by :func:`plot_metrics` (and led in the report's summary).
PLOT_METRICS: tuple[str, ...] = (
    "recognisability",
    "ref_similarity",
    "precision",
    "recall",
    "density",
    "coverage",
    "vendi",
    "tstr_accuracy",
)
_INFO: dict[str, MetricInfo] = {m.column: m for m in METRICS}


def _fmt(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{float(v):.{digits}f}"


def _digits(col: str) -> int:
    return 2 if col in ("vendi", "seed_norm_mean", "seed_norm_std", "seed_zscore_mean", "seed_zscore_std") else 3


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]], right_from: int = 1) -> list[str]:
    align = ["---" if i < right_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return lines


def _split(metrics: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    per = metrics[metrics["concept_id"] != ALL]
    overall = metrics[metrics["concept_id"] == ALL]
    methods = list(dict.fromkeys(metrics["method"].astype(str)))
    return per, overall, methods


def _overall_value(per: pd.DataFrame, overall: pd.DataFrame, method: str, col: str) -> float:
    row = overall[overall["method"] == method]
    if len(row):
        return float(row[col].iloc[0])
    vals = per.loc[per["method"] == method, col].dropna()
    return float(vals.mean()) if len(vals) else math.nan


def _spread(per: pd.DataFrame, method: str, col: str) -> float:
    """Std (ddof=1) of a metric across the method's concepts; NaN with fewer than 2 values."""
    vals = per.loc[per["method"] == method, col].dropna().to_numpy(dtype=float)
    return float(np.std(vals, ddof=1)) if vals.size >= 2 else math.nan


def leaders(metrics: pd.DataFrame) -> dict[str, tuple[list[str], float]]:
    """Per metric with a direction: the best method(s) by their "(all)" value and that value
    (ties within 1e-9 all lead); metrics that are NaN for every method are left out."""
    per, overall, methods = _split(metrics)
    methods = [m for m in methods if m != "references"]  # the baseline, not a method
    out = {}
    for mi in METRICS:
        if mi.higher_is_better is None or mi.column not in metrics:
            continue
        vals = {m: _overall_value(per, overall, m, mi.column) for m in methods}
        vals = {m: v for m, v in vals.items() if not math.isnan(v)}
        if not vals:
            continue
        best = max(vals.values()) if mi.higher_is_better else min(vals.values())
        out[mi.column] = ([m for m, v in vals.items() if abs(v - best) <= 1e-9], best)
    return out


def _versus(value: float, ref: float, higher_is_better: bool) -> str:
    """Whether the leading method's ``value`` beats the baseline's ``ref`` (ties within 1e-9)."""
    if math.isnan(ref):
        return "–"
    if abs(value - ref) <= 1e-9:
        return "ties"
    return "beats" if (value > ref) == higher_is_better else "does not beat"


def report_markdown(metrics: pd.DataFrame, run_id: str | None = None, judge_name: str | None = None) -> str:
    """A readable markdown report of :func:`~normguide.evaluation.evaluate`'s frame: which method
    leads per metric, then per block (recognisability; fidelity and diversity; downstream value;
    seed statistics) one line per metric saying what it means, a per-method table (the "(all)"
    rows, ± the spread across concepts) and a per-concept table."""
    per, overall, methods = _split(metrics)
    title = f"# Evaluation of run `{run_id}`" if run_id else "# Evaluation"
    lines = [title, ""]
    if metrics.empty:
        return "\n".join(lines + ["No images to evaluate.", ""])
    concepts = list(dict.fromkeys(per["concept_id"].astype(str)))
    lines.append(f"- judge (feature model): {judge_name or 'unspecified'}")
    lines.append(f"- {int(per['n_images'].sum())} images, {len(concepts)} concept(s), methods: {', '.join(methods)}")
    if "n_at_floor" in per:
        floor = int(per["n_at_floor"].fillna(0).sum())
        lines.append(f"- {floor} image(s) at the similarity floor (features that say nothing of any reference: noise, "
                     "blank): the judge abstains on them, so they are never counted as recognised (none_of_these)")
    real_sets = sorted(set(per["prdc_real"].dropna().astype(str)))
    if real_sets:
        what = {"real_test": "held-out real test images", "references": "the reference images"}
        lines.append(
            "- precision/recall/density/coverage measured against "
            + " / ".join(what.get(r, r) for r in real_sets)
            + " (k-NN radii; k is clamped to the number of real images − 1)"
        )
    lines.append(
        "- per-method values are means over concepts (± std across concepts); train-on-synthetic "
        "accuracy is balanced over concepts, chance = 1 / number of concepts"
    )
    lines.append("")

    lead = leaders(metrics)
    baseline = "references" in methods  # the references-only baseline: shown beside the leader, never a leader
    higher = {mi.column: mi.higher_is_better for mi in METRICS}
    lines += ["## Which method leads", ""]
    if baseline:
        lines += ["Among the seed methods; the last two columns hold the references-only baseline "
                  "(the real reference images themselves) against the leader.", ""]
    rows = []
    for col in PLOT_METRICS + tuple(c for c in lead if c not in PLOT_METRICS):
        if col in lead:
            best, value = lead[col]
            row = [col, ", ".join(best), _fmt(value, _digits(col))]
            if baseline:
                ref = _overall_value(per, overall, "references", col)
                row += [_fmt(ref, _digits(col)), _versus(value, ref, higher[col])]
            rows.append(row)
        elif col in metrics:
            rows.append([col, "n/a (not measured)", "–"] + (["–", "–"] if baseline else []))
    header = ["metric", "best method", "value"] + (["references alone", "leader vs references"] if baseline else [])
    lines += _table(header, rows, right_from=2) + [""]

    blocks = list(dict.fromkeys(mi.block for mi in METRICS))
    for block in blocks:
        cols = [mi.column for mi in METRICS if mi.block == block and mi.column in metrics]
        if not cols:
            continue
        lines += [f"## {block}", ""]
        lines += [f"- **{c}**: {_INFO[c].meaning}" for c in cols] + [""]
        rows = []
        for m in methods:
            cells = [m]
            for c in cols:
                v = _overall_value(per, overall, m, c)
                s = _spread(per, m, c) if _INFO[c].block != "Seed statistics" else math.nan
                cells.append(_fmt(v, _digits(c)) + ("" if math.isnan(s) else f" ± {_fmt(s, _digits(c))}"))
            rows.append(cells)
        lines += _table(["method", *cols], rows) + [""]
        if len(concepts) > 1 or block == "Seed statistics":
            rows = [
                [str(r["concept_id"]), str(r["name"]), str(r["method"]), _fmt(int(r["n_images"]))]
                + [_fmt(r[c], _digits(c)) for c in cols]
                for _, r in per.iterrows()
            ]
            lines += ["Per concept:", ""]
            lines += _table(["concept", "name", "method", "images", *cols], rows, right_from=3) + [""]
    return "\n".join(lines)


def plot_metrics(metrics: pd.DataFrame, title: str | None = None) -> bytes:
    """PNG bytes: one panel per main metric (:data:`PLOT_METRICS`), one bar per method (its "(all)"
    value, the mean over concepts), error bars = std across concepts. Matplotlib's Agg canvas is
    used directly (no global backend switch, nothing shown); the PNG carries no timestamp."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    per, overall, methods = _split(metrics)
    cols = [c for c in PLOT_METRICS if c in metrics]
    ncols = 4
    nrows = max(1, math.ceil(len(cols) / ncols))
    fig = Figure(figsize=(3.2 * ncols, 2.8 * nrows), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    colors = [f"C{i % 10}" for i in range(len(methods))]
    x = np.arange(len(methods))
    for ax, col in zip(axes, cols):
        vals = np.array([_overall_value(per, overall, m, col) for m in methods], dtype=float)
        errs = np.array([_spread(per, m, col) for m in methods], dtype=float)
        heights = np.nan_to_num(vals, nan=0.0)
        yerr = np.nan_to_num(errs, nan=0.0)
        ax.bar(x, heights, yerr=yerr if np.any(yerr > 0) else None, color=colors, capsize=3)
        for xi, v in zip(x, vals):
            if math.isnan(v):
                ax.text(xi, 0, "n/a", ha="center", va="bottom", fontsize=7)
        ax.set_title(col, fontsize=10)
        ax.set_xticks(x, methods, rotation=45, ha="right", fontsize=8)
        if col in ("recognisability", "precision", "recall", "coverage", "tstr_accuracy"):
            ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(cols) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    if not methods:
        axes[0].set_visible(True)
        axes[0].text(0.5, 0.5, "no images evaluated", ha="center", va="center")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
