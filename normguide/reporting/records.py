"""Where the report's files go under a run root, and the record :func:`write_report` returns.

Layout added to the run (DESIGN.md, step 6)::

    README.md                          the dataset card (Hugging Face dataset-card format)
    report/index.md                    markdown summary linking everything below
    report/<concept_id>/contact_sheet.png
    report/<concept_id>/seed_norms.png
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from normguide.data import layout

# the keys live in normguide.data.layout; these names are kept for callers
CARD_KEY = layout.CARD
REPORT_DIR = layout.REPORT_DIR
INDEX_KEY = layout.REPORT_INDEX
EVAL_REPORT_KEY = layout.EVAL_REPORT
EVAL_PLOT_KEY = layout.EVAL_PLOT
EVAL_METRICS_KEY = layout.EVAL_METRICS
#: The headline evaluation metrics of the summary tables (columns of eval/metrics.parquet).
HEADLINE_METRICS = ("recognisability", "none_of_these", "coverage", "tstr_accuracy", "vendi", "seed_zscore_mean")


sheet_key = layout.sheet_key
norms_key = layout.norms_key


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ConceptReport(_Record):
    """One concept's pictures and counts."""

    concept_id: str
    name: str
    prompt: str
    references: int
    images: dict[str, int]  # method -> images in the manifest
    contact_sheet_uri: str
    seed_norms_uri: str

    @property
    def total(self) -> int:
        return sum(self.images.values())


class ReportRecord(_Record):
    """What :func:`normguide.reporting.write_report` wrote (URIs) and the numbers it shows.

    Attributes:
        formats: the ways to load the run that exist: ``manifest`` always, ``hf`` and
            ``webdataset`` when their export is under the run.
        evaluation: headline metrics per method (the evaluation's "(all)" rows,
            :data:`HEADLINE_METRICS`), empty when the run has no ``eval/metrics.parquet``.
    """

    run_id: str
    output_root: str
    card_uri: str
    index_uri: str
    concepts: list[ConceptReport]
    formats: list[str] = ["manifest"]
    evaluation: dict[str, dict[str, float | None]] = {}
    evaluation_report_uri: str | None = None
    evaluation_plot_uri: str | None = None
    judge: str | None = None

    @property
    def images(self) -> int:
        return sum(c.total for c in self.concepts)

    @property
    def uris(self) -> list[str]:
        """Every file the report wrote."""
        out = [self.card_uri, self.index_uri]
        for c in self.concepts:
            out += [c.contact_sheet_uri, c.seed_norms_uri]
        return out
