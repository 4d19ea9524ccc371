"""``run.json``: the run's record (configuration with secrets masked, model, versions, status).

Written when a run starts, rewritten when it is finalized. A run id names one dataset, so a run
record also guards against resuming a run with settings that would change its content.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from normguide.data import layout
from normguide.errors import InputError

RUN_JSON = layout.RUN_JSON  # names kept for callers; the keys live in normguide.data.layout
SUCCESS = layout.SUCCESS


def now() -> datetime:
    return datetime.now(timezone.utc)


def versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    from normguide import __version__

    return {"normguide": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode()


#: run.json ``status`` values: ``running`` (started, or a driver is at work), ``complete``
#: (``_SUCCESS`` written), ``failed`` (some concepts failed; ``error`` says which),
#: ``interrupted`` (stopped by Ctrl-C or a signal). A rerun resumes any but ``complete``.
STATUSES = ("running", "complete", "failed", "interrupted")


def new_record(run_id: str, settings: dict[str, Any], *, output_root: str, model: dict[str, Any],
               table_digest: str, warnings: list[str] | None = None) -> bytes:
    """The run.json of a run that starts now (status ``running``); ``settings``: the run's
    configuration with its secrets masked (``RunConfig.public_dict()``); ``warnings``: what the
    model cannot draw of the table (``normguide.vocabulary``); ``table_digest`` the digest of the
    concept table it runs."""
    return dumps({
        "run_id": run_id, "status": "running", "started_at": now().isoformat(),
        "finished_at": None, "output_root": output_root, "model": model, "versions": versions(),
        "table_digest": table_digest, "concepts": None, "images": None, "error": None,
        "config": settings, "warnings": list(warnings or []),
    })


def with_status(data: bytes, status: str, *, error: str | None = None, settings: dict[str, Any] | None = None,
                table_digest: str | None = None) -> bytes:
    """run.json ``data`` with a new ``status`` (and ``error``); ``running`` again on a resume,
    with the current table's digest and (masked) settings when they are given."""
    if status not in STATUSES:
        raise ValueError(f"unknown run status {status!r}")
    doc = json.loads(data)
    doc.update(status=status, error=error)
    if status != "running":
        doc["finished_at"] = now().isoformat()
    if settings is not None:
        doc["config"] = settings
    if table_digest is not None:
        doc["table_digest"] = table_digest
    return dumps(doc)


def finished_record(data: bytes, *, concepts: list[str], images: int, table_digest: str | None = None) -> bytes:
    """run.json ``data`` marked complete with the run's concepts, image count and the digest of
    the concept table it covers."""
    doc = json.loads(data)
    doc.update(status="complete", finished_at=now().isoformat(), concepts=list(concepts), images=images, error=None)
    if table_digest is not None:
        doc["table_digest"] = table_digest
    return dumps(doc)


def with_cost(data: bytes, cost: dict[str, Any]) -> bytes:
    """run.json ``data`` with the run's throughput, MFU and cost record (``cost``:
    ``normguide.pipeline.results.RunCost`` as JSON), measured at ``cost_measured_at``."""
    doc = json.loads(data)
    doc.update(cost=cost, cost_measured_at=now().isoformat())
    return dumps(doc)


def covers_table(data: bytes, table_digest: str) -> bool:
    """Whether a complete run's record covers the concept table whose digest is ``table_digest``."""
    doc = json.loads(data)
    return doc.get("status") == "complete" and doc.get("table_digest") == table_digest


class NotARunError(InputError):
    """The location holds no normguide run (no run.json, or one that is not a run record)."""


def open_run(run_uri: str, *, storage_config=None):
    """The store of the run at ``run_uri`` (local path or s3:// URI; S3 credentials from
    ``storage_config`` or the environment): "open an existing run", for every command that
    reads one. :class:`NotARunError` when it has no run.json."""
    from normguide.data.storage import Storage

    store = Storage.open(run_uri.rstrip("/"), storage_config=storage_config)
    if not store.exists(layout.RUN_JSON):
        if missing := _missing_bucket(store):
            raise NotARunError(f"{run_uri} cannot be a run: {missing}")
        raise NotARunError(f"{run_uri} is not a normguide run: it has no run.json")
    return store


def _missing_bucket(store) -> str | None:
    """'the bucket 'b' does not exist (S3 endpoint ...)' when ``store`` is on S3 and its bucket
    is missing, else None (one listing request; only asked once run.json was not found)."""
    bucket = getattr(store, "bucket", None)
    if bucket is None:
        return None
    from normguide.data.storage.errors import classify

    try:
        store.fs.call_s3("list_objects_v2", Bucket=bucket, MaxKeys=1)
    except Exception as exc:  # noqa: BLE001 - only a missing bucket is named here
        if classify(exc) == "no_bucket":
            return f"the bucket {bucket!r} does not exist (S3 endpoint {store.endpoint})"
    return None
