"""Where the report's files go under a run root, and the record :func:`write_report` returns.

Layout added to the run (DESIGN.md, step 6)::

    README.md                          the dataset card (Hugging Face dataset-card format)
    report/index.md                    markdown summary linking everything below
    report/<concept_id>/contact_sheet.png
    report/<concept_id>/seed_norms.png  (for at most ``MAX_PLOTTED_CONCEPTS`` concepts)
    report/all_seed_norms.png          (every concept's seeds, when some have no plot of their own)
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
NORMS_OVERVIEW_KEY = layout.NORMS_OVERVIEW


def shown_note(shown: int, total: int) -> str:
    """What a summary of a run of many concepts draws inline, and why."""
    return (f"{shown} of {total} concepts are drawn here, with a seed-norm plot each: those whose planned seeds "
            f"sit farthest from the typical band |z| ≤ 2 (the ones worth a look; table order among equals). "
            f"Every concept has its "
            f"contact sheet and its page; the plot below has every concept's seeds.")


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
    #: None: the concept got no seed-norm plot of its own (a run with more concepts than
    #: ``write_report`` plots; its seeds are in the overview plot), and is not drawn inline
    seed_norms_uri: str | None = None

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
    #: report/all_seed_norms.png, written when some concepts got no seed-norm plot of their own
    seed_norms_overview_uri: str | None = None

    @property
    def shown(self) -> list[ConceptReport]:
        """The concepts whose pictures the summaries draw inline (those with a seed-norm plot)."""
        return [c for c in self.concepts if c.seed_norms_uri is not None]

    @property
    def images(self) -> int:
        return sum(c.total for c in self.concepts)

    @property
    def uris(self) -> list[str]:
        """Every file the report wrote."""
        out = [self.card_uri, self.index_uri]
        for c in self.concepts:
            out += [c.contact_sheet_uri, *([c.seed_norms_uri] if c.seed_norms_uri else [])]
        return out + ([self.seed_norms_overview_uri] if self.seed_norms_overview_uri else [])
