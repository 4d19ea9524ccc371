"""The run summary as a Prefect markdown artifact."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact

from normguide.pipeline import RunSummary
from normguide.report import summary_markdown


@task(name="publish-summary")
def publish_summary(summary: RunSummary) -> str:
    """Publish the per-concept summary (images, methods, mean seed z-score, failures)."""
    md = summary_markdown(summary)
    create_markdown_artifact(markdown=md, key="normguide-run-summary", description=f"normguide run {summary.run_id}")
    return md
