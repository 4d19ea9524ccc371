"""The summary of an existing run, finished or not, from its files alone (``normguide show``).

Status, from ``run.json`` and ``_SUCCESS`` (and the run's lease, ``_LEASE``, when it has one):

    complete     ``_SUCCESS`` exists and a quick verification passes
    damaged      ``_SUCCESS`` exists, but ``manifest.parquet`` is missing or unreadable, or an
                 image it lists is missing or empty (the quick check: one listing per concept
                 folder, sizes only, no image read; ``normguide verify`` checks every sha256)
    running      run.json says so and the run's lease is live (or there is no lease to ask)
    interrupted  run.json says so, or it says running but its lease expired or its holder, a
                 process of this host, is gone (the run died)
    failed       run.json says so (some concepts failed; its ``error`` says which)

Counts per concept and method come from ``manifest.parquet``, or, before it exists, from the
concepts' manifest parts written so far. The generation's throughput, MFU and cost, when run.json has
them (``cost``), in the words of the run's own summary. Reads only small files and listings; no
model, no images.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pandas as pd

from normguide.data import layout, run_record
from normguide.data import manifest as mf
from normguide.data.parquet_io import read_frame
from normguide.data.storage import Storage
from normguide.data.text import printable
from normguide.reporting.cost import cost_lines
from normguide.reporting.records import CARD_KEY, EVAL_METRICS_KEY, EVAL_REPORT_KEY, INDEX_KEY, REPORT_DIR
from normguide.reporting.tables import counts_by_concept, counts_markdown, evaluation_markdown, headline_evaluation

NotARunError = run_record.NotARunError  # the name callers know; the class lives with run.json


@dataclass(frozen=True)
class RunStatus:
    """What ``normguide show`` prints about a run."""

    root: str
    run_id: str
    status: str  # complete | damaged | running | interrupted | failed
    detail: str  # one line: why this status
    model: str
    counts: dict[str, tuple[str, dict[str, int]]]  # concept_id -> (name, {method: images})
    counts_from: str  # "manifest.parquet" or "manifest parts (not finalized)"
    expected_concepts: list[str] | None = None  # from run.json, once finalized
    evaluation: dict[str, dict[str, float | None]] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # what -> URI, of the report files present
    cost: dict | None = None  # run.json ``cost``: throughput, MFU and cost of the generation

    @property
    def complete(self) -> bool:
        return self.status == "complete"


def open_run(run_uri: str, *, endpoint_url: str | None = None) -> Storage:
    """The store of the run at ``run_uri`` (local path or s3:// URI; S3 credentials from the
    environment); :class:`NotARunError` when it has no run.json."""
    from normguide.config import StorageConfig

    return run_record.open_run(run_uri, storage_config=StorageConfig(endpoint_url=endpoint_url))


def _lease_state(store: Storage) -> str | None:
    """'live', 'expired' (also when its holder is a process of this host that is gone: killed
    with SIGKILL, its lease not yet run out), 'damaged', or None (no lease)."""
    from normguide.data.storage.lease import lease_state

    return lease_state(store)


def _damage(store: Storage) -> str | None:
    """What is wrong with a finished run, by the quick check (None: nothing found)."""
    from normguide.data.verify import SHOWN, missing_images

    try:
        manifest = read_frame(store.read_bytes(layout.MANIFEST))
    except FileNotFoundError:
        return "its manifest.parquet is missing"
    except Exception as exc:  # noqa: BLE001 - any failure to read it means it is damaged
        return f"its manifest.parquet is unreadable ({type(exc).__name__})"
    damaged = sorted(missing_images(store, zip(manifest.concept_id, manifest.image_id)).items())
    if not damaged:
        return None
    named = ", ".join(f"{k} ({why})" for k, why in damaged[:SHOWN])
    more = f" and {len(damaged) - SHOWN} more" if len(damaged) > SHOWN else ""
    return f"{len(damaged)} of its {len(manifest)} image(s) are missing or empty: {named}{more}"


def _counts(store: Storage) -> tuple[dict[str, tuple[str, dict[str, int]]], str]:
    if store.exists(layout.MANIFEST):
        try:
            return counts_by_concept(read_frame(store.read_bytes(layout.MANIFEST))), layout.MANIFEST
        except Exception:  # noqa: BLE001 - unreadable: the status says so; count the parts instead
            pass
    parts = [k for k in store.list(layout.MANIFEST_DIR) if layout.is_part_key(k)]
    frames = [mf.parquet_to_table(store.read_bytes(k)).select(["concept_id", "name", "method"]).to_pandas() for k in parts]
    manifest = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["concept_id", "name", "method"])
    return counts_by_concept(manifest), f"{len(parts)} manifest part(s) (not finalized)"


def run_status(store: Storage) -> RunStatus:
    """The status, counts, evaluation and report files of the run in ``store``."""
    # 1. The record and the status
    try:
        doc = json.loads(store.read_bytes(run_record.RUN_JSON))
        recorded = str(doc.get("status") or "running")
    except (ValueError, AttributeError):
        raise NotARunError(f"{store.uri(run_record.RUN_JSON)} is not a normguide run record") from None
    if store.exists(run_record.SUCCESS):
        damage = _damage(store)
        if damage is None:
            status, detail = "complete", (f"_SUCCESS written; finished {doc.get('finished_at')}; quick check passed: "
                                          "every image present and not empty")
        else:
            status, detail = "damaged", (f"_SUCCESS written, but {damage}; `normguide verify {store.root}` "
                                         "checks every file")
    elif recorded in ("failed", "interrupted"):
        status = recorded
        detail = f"run.json says {recorded}" + (f": {doc['error']}" if doc.get("error") else "") + \
            "; `normguide run` with the same settings resumes it"
    else:
        lease = _lease_state(store)
        if lease == "expired":
            status, detail = "interrupted", ("run.json says running but its lease expired or its process is gone: "
                                             "the run stopped; rerun to resume")
        else:
            status = "running"
            detail = (f"started {doc.get('started_at')}; " + ("its lease is live" if lease == "live" else
                      "no _SUCCESS yet (a run that was killed looks the same: rerun to resume)"))
    if recorded == "complete" and status not in ("complete", "damaged"):
        detail = "run.json says complete but _SUCCESS is missing; " + detail
    model = doc.get("model") or {}

    # 2. Counts, evaluation, report files
    counts, counts_from = _counts(store)
    evaluation = headline_evaluation(store.read_bytes(EVAL_METRICS_KEY)) if store.exists(EVAL_METRICS_KEY) else {}
    files = {}
    for what, key in (("dataset card", CARD_KEY), ("report", INDEX_KEY), ("evaluation report", EVAL_REPORT_KEY)):
        if store.exists(key):
            files[what] = store.uri(key)
    sheets = [k for k in store.list(REPORT_DIR) if k.endswith("/contact_sheet.png")]
    if sheets:
        files["contact sheets"] = store.uri(REPORT_DIR) + f"/<concept_id>/contact_sheet.png ({len(sheets)})"
    return RunStatus(
        root=store.root, run_id=str(doc.get("run_id")), status=status, detail=detail,
        model=f"{model.get('id')} (revision {model.get('revision')})" if model else "?",
        counts=counts, counts_from=counts_from, expected_concepts=doc.get("concepts"), evaluation=evaluation,
        files=files, cost=doc.get("cost") if isinstance(doc.get("cost"), dict) else None,
    )


def show_text(s: RunStatus) -> str:
    """The summary ``normguide show`` prints (markdown-ish plain text)."""
    total = sum(sum(per.values()) for _, per in s.counts.values())
    lines = [
        f"run {s.run_id} at {s.root}",
        f"status: {s.status.upper()} ({s.detail})",
        f"model: {s.model}",
        f"images: {total} in {len(s.counts)} concept(s), counted from {s.counts_from}",
        "",
    ]
    if s.counts:
        lines += counts_markdown(s.counts) + [""]
    if s.cost:  # in the words of the run's own summary (normguide.reporting.cost)
        lines += [*cost_lines(s.cost), f"cost covers {s.cost.get('scope') or 'this run'}", ""]
    if s.evaluation:
        lines += ["evaluation (means over concepts):", *evaluation_markdown(s.evaluation), ""]
    elif s.complete:
        lines += ["evaluation: none (`normguide evaluate <run>` scores it)", ""]
    for what, uri in s.files.items():
        lines.append(f"{what}: {uri}")
    if s.complete and "dataset card" not in s.files:
        lines.append("dataset card and contact sheets: not written for this run")
    # text of the run's files (names, errors) may hold control characters (runs made before
    # names were checked): escaped, so the terminal is never moved, recoloured or reordered
    return "\n".join(printable(line) for line in lines).rstrip() + "\n"
