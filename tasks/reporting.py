"""The run's summary and report as Prefect artifacts (what the flow run page shows)."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_image_artifact, create_markdown_artifact

from normguide.pipeline import RunSummary
from normguide.report import summary_markdown
from normguide.reporting import ReportRecord, index_markdown


@task(name="publish-summary")
def publish_summary(summary: RunSummary) -> str:
    """Publish the per-concept summary (images, methods, mean seed z-score, failures)."""
    md = summary_markdown(summary)
    create_markdown_artifact(markdown=md, key="normguide-run-summary", description=f"normguide run {summary.run_id}")
    return md


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def report_artifact_markdown(record: ReportRecord) -> str:
    """The report's summary with absolute links. The Prefect UI draws an image only from an
    http(s) URL; a run on a local disk or on s3:// gets its pictures as paths to open, said so."""
    md = index_markdown(record, absolute=True)
    if not _is_http(record.output_root):
        md += ("\n> The pictures above are files under the run's folder "
               f"(`{record.output_root}`), not web addresses, so the Prefect UI shows them as links: "
               "open them from there, or browse the folder.\n")
    return md


@task(name="publish-report")
def publish_report(record: ReportRecord) -> str:
    """Publish the dataset report: a markdown artifact (counts, evaluation, contact sheets and
    seed-norm plots linked, the card's location) and, for pictures at http(s) URLs, one image
    artifact per contact sheet."""
    md = report_artifact_markdown(record)
    create_markdown_artifact(markdown=md, key="normguide-dataset-report",
                             description=f"normguide dataset {record.run_id}: card {record.card_uri}")
    for c in record.concepts:
        if _is_http(c.contact_sheet_uri):
            create_image_artifact(image_url=c.contact_sheet_uri, key=_artifact_key(f"contact-sheet-{c.concept_id}"),
                                  description=f"{c.concept_id} ({c.name}): references and generated images")
    return md


def _artifact_key(text: str) -> str:
    """A Prefect artifact key: lowercase letters, digits and dashes only."""
    key = "".join(ch if ch.isalnum() else "-" for ch in text.lower())
    return "-".join(part for part in key.split("-") if part)[:100]
