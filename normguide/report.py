"""The run summary: one small dict per run, rendered as markdown (Prefect artifact) or text."""

from __future__ import annotations

import math


def summary_markdown(summary: dict) -> str:
    lines = [
        f"# normguide run `{summary['run_id']}`",
        "",
        f"- output: `{summary['output_root']}`",
        f"- model: {summary.get('model', '?')}",
        f"- status: **{summary_status(summary)}**",
        "",
        "| concept | status | images | generated | methods | mean seed z | error |",
        "| --- | --- | ---: | ---: | --- | ---: | --- |",
    ]
    for cid, c in summary["concepts"].items():
        z = c.get("mean_seed_zscore")
        zs = "" if z is None or (isinstance(z, float) and math.isnan(z)) else f"{z:+.2f}"
        err = (c.get("error") or "").replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {cid} | {c['status']} | {c.get('images', 0)} | {c.get('generated', 0)} | "
            f"{', '.join(c.get('methods', []))} | {zs} | {err} |"
        )
    return "\n".join(lines) + "\n"


def summary_status(summary: dict) -> str:
    if summary.get("already_complete"):
        return "already complete (nothing to do)"
    if summary["failed"]:
        return f"{len(summary['failed'])} of {len(summary['concepts'])} concept(s) failed"
    return "complete" if summary.get("finalized") else "shard complete (not finalized)"
