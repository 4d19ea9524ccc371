"""The run summary rendered as markdown (the Prefect artifact; the CLI renders the same record)."""

from __future__ import annotations

from normguide.pipeline.results import RunSummary


def format_z(z: float | None) -> str:
    return "" if z is None else f"{z:+.2f}"


def summary_markdown(summary: RunSummary) -> str:
    model = summary.model + (f" ({summary.model_note})" if summary.model_note and summary.model_note not in summary.model else "")
    lines = [
        f"# normguide run `{summary.run_id}`",
        "",
        f"- output: `{summary.output_root}`",
        f"- model: {model}",
        f"- status: **{summary.status}**",
        "",
        "| concept | status | images | generated | methods | mean seed z |",
        "| --- | --- | ---: | ---: | --- | ---: |",
    ]
    for cid, c in summary.concepts.items():
        lines.append(f"| {cid} | {c.status} | {c.images} | {c.generated} | {', '.join(c.methods)} | {format_z(c.mean_seed_zscore)} |")
    errors = [(cid, c.error) for cid, c in summary.concepts.items() if c.error]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- `{cid}`: {err.replace(chr(10), ' ')}" for cid, err in errors]
    if summary.evaluation is not None:
        lines += ["", f"Evaluation ({summary.evaluation.judge}): `{summary.evaluation.report_uri}`"]
    return "\n".join(lines) + "\n"
