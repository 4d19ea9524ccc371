"""Evaluation: how good a run's images are, per concept and method.

A library (no Prefect, no storage IO): inputs are PIL images, arrays and pandas frames; outputs are
frames, markdown strings and PNG bytes. The pipeline step reads a run's manifest and images, calls
:func:`evaluate`, and writes ``eval/metrics.parquet``, ``eval/report.md`` and the plot.

- judges (feature models): :class:`Judge` (protocol), :class:`DigitsJudge` (the demo's digit
  classifier), :class:`ClipJudge` (a local CLIP directory, zero-shot); :func:`digits_real_test`
  (the demo's held-out real test digits per concept)
- metrics (pure functions): :func:`recognisability`, :func:`reference_similarity`, :func:`prdc`,
  :func:`vendi_score`, :func:`mean_pairwise_distance`, :func:`pixel_features`,
  :func:`tstr_accuracy`, :func:`seed_statistics`
- :func:`evaluate` -> metrics frame (:data:`COLUMNS`; "(all)" rows per method)
- :func:`report_markdown`, :func:`plot_metrics`

Importing this package imports neither torch, transformers nor matplotlib.
"""

from normguide.evaluation.evaluate import ALL, COLUMNS, METRIC_COLUMNS, METRICS, REFERENCES, MetricInfo, evaluate
from normguide.evaluation.judges import DIGIT_NAMES, ClipJudge, DigitsJudge, Judge, digit_index, digits_real_test
from normguide.evaluation.metrics import (
    mean_pairwise_distance,
    pixel_features,
    prdc,
    recognisability,
    reference_similarity,
    seed_statistics,
    tstr_accuracy,
    vendi_score,
)
from normguide.evaluation.report import PLOT_METRICS, leaders, plot_metrics, report_markdown

__all__ = [
    "ALL",
    "COLUMNS",
    "DIGIT_NAMES",
    "METRICS",
    "METRIC_COLUMNS",
    "PLOT_METRICS",
    "REFERENCES",
    "ClipJudge",
    "DigitsJudge",
    "Judge",
    "MetricInfo",
    "digit_index",
    "digits_real_test",
    "evaluate",
    "leaders",
    "mean_pairwise_distance",
    "pixel_features",
    "plot_metrics",
    "prdc",
    "recognisability",
    "reference_similarity",
    "report_markdown",
    "seed_statistics",
    "tstr_accuracy",
    "vendi_score",
]
