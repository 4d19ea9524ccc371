"""Typed results of the pipeline's steps: small, JSON-able records (never tensors or images).

They are what a step returns, what the Prefect driver passes between tasks and shows in the UI,
and what the CLI and the markdown report render. One definition each, so a key is never a
convention shared between modules.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PreparedRun(_Record):
    """The run is set up: output writable, run.json started (or the run found complete)."""

    run_id: str
    output_root: str
    complete: bool
    model: str
    is_demo: bool
    model_note: str | None = None


class SeedsRecord(_Record):
    """A concept's seeds file after inversion (``planned == 0``) or planning."""

    concept_id: str
    seeds_uri: str
    num_seeds: int
    planned: int = 0


class GeneratedConcept(_Record):
    """A concept's images and manifest part exist."""

    concept_id: str
    images: int
    generated: int
    skipped: bool = False
    methods: list[str] = []
    mean_seed_zscore: float | None = None


class ConceptOutcome(_Record):
    """One concept's line in the run summary."""

    concept_id: str
    status: Literal["completed", "skipped", "failed"]
    images: int = 0
    generated: int = 0
    methods: list[str] = []
    mean_seed_zscore: float | None = None
    error: str | None = None

    @classmethod
    def from_generated(cls, g: GeneratedConcept) -> ConceptOutcome:
        return cls(concept_id=g.concept_id, status="skipped" if g.skipped else "completed", images=g.images,
                   generated=g.generated, methods=g.methods, mean_seed_zscore=g.mean_seed_zscore)

    @classmethod
    def failed(cls, concept_id: str, error: str) -> ConceptOutcome:
        return cls(concept_id=concept_id, status="failed", error=error)


class EvaluationRecord(_Record):
    """Where a run's evaluation was written, and its headline numbers per method."""

    metrics_uri: str
    report_uri: str
    judge: str
    per_method: dict[str, dict[str, float | None]] = {}
    #: eval/longtail.parquet and its rare-class accuracy per training set (evaluation.labelled_table)
    longtail_uri: str | None = None
    longtail_rare_accuracy: dict[str, float] = {}


class RunSummary(_Record):
    """The outcome of one run (or one shard of a fan-out)."""

    run_id: str
    output_root: str
    model: str = "?"
    is_demo: bool = False
    model_note: str | None = None
    concepts: dict[str, ConceptOutcome] = {}
    finalized: bool = False
    already_complete: bool = False
    manifest_uri: str | None = None
    evaluation: EvaluationRecord | None = None
    evaluation_error: str | None = None
    exports: dict[str, str] = {}
    card_uri: str | None = None
    report_error: str | None = None

    @property
    def failed(self) -> list[str]:
        return [cid for cid, c in self.concepts.items() if c.status == "failed"]

    @property
    def ok(self) -> bool:
        """Every concept done and, when asked for, the evaluation, exports and report written."""
        return not self.failed and self.evaluation_error is None and self.report_error is None

    @property
    def status(self) -> str:
        if self.already_complete:
            return "already complete (nothing to do)"
        if self.failed:
            return f"{len(self.failed)} of {len(self.concepts)} concept(s) failed"
        return "complete" if self.finalized else "shard complete (not finalized)"
