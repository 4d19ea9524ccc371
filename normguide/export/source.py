"""What every export format reads: a finalized run (its manifest and images) and the rules for
shards that survive a killed export.

A shard is written as files under the format's folder, each written atomically by the Storage
layer, and is complete once its last file exists (the formats write that file last). The
folder's ``_SUCCESS`` (a small JSON record of the export's settings) is written after every
shard, so a finished export is recognised by one existence check, and a request with other
settings than the finished one is refused rather than mixed into it. The record also holds the
sha256 of the manifest the export was made from (and is written as ``_STARTED`` before the
first shard), so the export of a run reopened since is made again, never left stale.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from normguide.data import layout
from normguide.data import manifest as mf
from normguide.data.images import sha256_hex
from normguide.data.storage import Storage
from normguide.data.verify import DamagedRunError, check_images

_log = logging.getLogger("normguide")

#: Concurrent image reads per shard (the reads are IO-bound; S3 latency dominates).
READ_THREADS = 16
EXPORT_SUCCESS = layout.EXPORT_SUCCESS


@dataclass(frozen=True)
class FinishedRun:
    """A finalized run as export input.

    Attributes:
        storage: the run's root.
        run_id: the run's id (from run.json).
        manifest: ``manifest.parquet`` as read (the columns of ``normguide.data.manifest``).
        concepts: the concept ids, sorted: the names of the ``label`` ClassLabel, in label order.
        manifest_sha256: the sha256 of ``manifest.parquet``'s bytes: an export records it, so the
            export of a run reopened since (concepts added or changed) is made again.
    """

    storage: Storage
    run_id: str
    manifest: pa.Table
    concepts: tuple[str, ...]
    manifest_sha256: str = ""


#: Manifest columns every export reads.
_EXPORT_NEEDS = ("concept_id", "image_id", "sha256")


def recorded_run_id(storage: Storage) -> str:
    """The run id its run.json records (the root's last path segment when there is none)."""
    import json

    from normguide.data import run_record

    if storage.exists(run_record.RUN_JSON):
        try:
            return str(json.loads(storage.read_bytes(run_record.RUN_JSON))["run_id"])
        except (ValueError, KeyError, TypeError):
            pass
    return storage.root.rstrip("/").rsplit("/", 1)[-1]


def open_finished_run(storage: Storage, run_id: str) -> FinishedRun:
    """The run at ``storage`` if it is finalized (``_SUCCESS`` and ``manifest.parquet``), else a
    ValueError naming the run and what is missing; a :class:`DamagedRunError` (a ValueError)
    names every image of the manifest that is missing or empty."""
    missing = [k for k in (layout.SUCCESS, layout.MANIFEST) if not storage.exists(k)]
    if missing:
        raise ValueError(f"run {run_id!r} at {storage.root} is not finalized: it has no {' and no '.join(missing)} "
                         "(finish it with `normguide run` before exporting)")
    data = storage.read_bytes(layout.MANIFEST)
    try:
        manifest = mf.parquet_to_table(data)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        raise ValueError(f"{storage.uri(layout.MANIFEST)} is not a readable manifest ({type(exc).__name__}: {exc})") from None
    lacking = [c for c in _EXPORT_NEEDS if c not in manifest.column_names]
    if lacking:
        raise ValueError(f"{storage.uri(layout.MANIFEST)} lacks the column(s) {lacking} an export needs (every image "
                         "is checked against its sha256): the manifest was altered after the run finished")
    check_images(storage, zip(manifest.column("concept_id").to_pylist(), manifest.column("image_id").to_pylist()),
                 doing="export")  # one listing per concept folder: every missing image named, before any shard
    concepts = tuple(sorted(set(manifest.column("concept_id").to_pylist())))
    return FinishedRun(storage=storage, run_id=run_id, manifest=manifest, concepts=concepts,
                       manifest_sha256=sha256_hex(data))


def image_keys(rows: pa.Table) -> list[str]:
    return [mf.image_key(c, i) for c, i in zip(rows.column("concept_id").to_pylist(), rows.column("image_id").to_pylist())]


def read_images(storage: Storage, rows: pa.Table) -> list[bytes]:
    """The PNG bytes of the manifest ``rows``, in row order, each checked against its sha256
    (an export never ships an image the manifest does not describe)."""
    keys = image_keys(rows)
    with ThreadPoolExecutor(max_workers=min(READ_THREADS, max(1, len(keys))), thread_name_prefix="normguide-export") as pool:
        blobs = list(pool.map(storage.read_bytes, keys))
    wrong = {key: f"sha256 {sha256_hex(blob)[:12]}... is not the recorded {str(want)[:12]}..."
             for key, blob, want in zip(keys, blobs, rows.column("sha256").to_pylist()) if sha256_hex(blob) != want}
    if wrong:  # changed after the run was finalized: every such image of the shard named
        raise DamagedRunError(storage.root, wrong, doing="export")
    return blobs


def json_rows(rows: pa.Table) -> list[dict[str, Any]]:
    """Manifest rows as JSON-able dicts in column order: timestamps as ISO 8601 strings, NaN as null."""

    def plain(v: Any) -> Any:
        if isinstance(v, datetime):
            return v.isoformat()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return [{k: plain(v) for k, v in r.items()} for r in rows.to_pylist()]


def shard_ranges(num_rows: int, shard_size: int) -> list[range]:
    """Row ranges of ``shard_size`` rows (the last one shorter); one empty range for no rows."""
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    return [range(i, min(i + shard_size, num_rows)) for i in range(0, num_rows, shard_size)] or [range(0)]


def parquet_bytes(table: pa.Table, *, row_group_size: int | None = None) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


def dumps(doc: dict[str, Any]) -> bytes:
    """Deterministic JSON bytes (sorted keys): equal settings give equal marker bytes."""
    return json.dumps(doc, indent=2, sort_keys=True).encode()


#: The export settings a user chooses; an existing export with others is refused, not replaced.
SETTINGS = ("format", "shard_size")
#: Written when an export starts (its record), so a killed export's files say which manifest
#: they were made from; removed once ``_SUCCESS`` is written.
EXPORT_STARTED = layout.EXPORT_STARTED


def finished_export(storage: Storage, folder: str, record: dict[str, Any]) -> bool:
    """Whether ``<folder>/_SUCCESS`` exists with this record (the export is done); else make the
    folder ready for it and return False (then :func:`start_export` once the files there are
    checked).

    ``record`` holds the export's settings (:data:`SETTINGS`) and what it was made from (the run
    id, ``manifest_sha256`` and counts). ValueError naming the folder when an export there has
    other settings (a re-export with another shard size must start from an empty folder: the old
    shards would otherwise be mixed into the new ones). An export, finished or killed, of an
    earlier manifest of the run (the run was reopened since: concepts added or changed) is
    deleted, with a warning, and made again. Files with no record at all (an export killed before
    records were kept) are resumed as before, or refused by :func:`refuse_strangers`."""
    done_key, started_key = layout.export_success_key(folder), layout.export_started_key(folder)
    present = storage.list(folder)
    found = next((k for k in (done_key, started_key) if k in present), None)
    try:
        before = json.loads(storage.read_bytes(found)) if found else None
    except ValueError:
        before = {}
    if found == done_key and before == record:
        return True
    if before is not None:
        changed = sorted(k for k in SETTINGS if before.get(k) != record.get(k))
        if changed:
            raise ValueError(f"{storage.uri(folder)} already holds a {record.get('format')} export with other settings "
                             f"({', '.join(f'{k}: {before.get(k)!r} there, {record.get(k)!r} asked' for k in changed)}); "
                             f"remove {storage.uri(folder)} to export again, or ask for the same settings")
    if before is not None and before != record:
        _log.warning(
            "%s holds a %s export of an earlier manifest of this run (the run was reopened since); it is "
            "deleted and made again", storage.uri(folder), record.get("format"))
        storage.delete(sorted(present, key=lambda k: k != done_key))  # _SUCCESS first
    return False


def start_export(storage: Storage, folder: str, record: dict[str, Any]) -> None:
    """Record what the export about to be written is made from (``_STARTED``)."""
    storage.write_bytes(layout.export_started_key(folder), dumps(record))


def finish_export(storage: Storage, folder: str, record: dict[str, Any]) -> None:
    """Write ``<folder>/_SUCCESS`` (last) and drop the start marker."""
    storage.write_bytes(layout.export_success_key(folder), dumps(record))
    storage.delete([layout.export_started_key(folder)])


def refuse_strangers(storage: Storage, folder: str, planned: Sequence[str]) -> set[str]:
    """The keys under ``folder`` (listed once); ValueError naming the files that the planned export
    would not write (left by an export with another shard size: loaders would read both)."""
    present = set(storage.list(folder))
    strangers = sorted(present - set(planned) - {layout.export_success_key(folder), layout.export_started_key(folder)})
    if strangers:
        shown = ", ".join(storage.uri(k) for k in strangers[:3]) + (" ..." if len(strangers) > 3 else "")
        raise ValueError(f"{storage.uri(folder)} holds {len(strangers)} file(s) this export would not write ({shown}), "
                         f"from an export with other settings; remove {storage.uri(folder)} to export again")
    return present
