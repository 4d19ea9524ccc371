"""WebDataset export: tar shards that streaming training jobs read sequentially.

Layout under the run root (the img2dataset convention: a Parquet index and a stats file per shard)::

    webdataset/shard-00000.tar           samples <key>.json + <key>.png, key = <concept_id>/<image_id>
    webdataset/shard-00000.parquet       the shard's manifest rows + key and byte offsets in the tar
    webdataset/shard-00000.stats.json    written last: the shard is complete once it exists
    webdataset/_SUCCESS                  written after every shard: the export's settings

Samples follow the manifest's order, ``shard_size`` per shard. The key keeps the concept as a
folder because image ids repeat across concepts; WebDataset splits a member name at the first dot
of its last path component, and image ids have none (concept ids may, in the folder part).

Byte-for-byte reproducible: members in key order with ``.json`` before ``.png`` (sorted), mtime
0 (the manifest holds no timestamps), uid/gid 0 and no user names, PAX format, and
stats without timestamps. A killed export resumes by skipping the shards whose stats exist (the
tar and index are written before it, each atomically) and rebuilding the others, so the result
equals an uninterrupted export's bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pyarrow as pa

from normguide.data import layout
from normguide.export.source import (
    FinishedRun,
    dumps,
    finish_export,
    finished_export,
    json_rows,
    parquet_bytes,
    read_images,
    refuse_strangers,
    shard_ranges,
    start_export,
)

FOLDER = layout.WEBDATASET_DIR


shard_name = layout.wds_shard_name


def sample_key(concept_id: str, image_id: str) -> str:
    return f"{concept_id}/{image_id}"


def shard_pattern(root_uri: str, num_shards: int) -> str:
    """The brace pattern WebDataset expands to every shard: ``.../shard-{00000..00002}.tar``."""
    last = shard_name(num_shards - 1)[len("shard-"):]
    body = f"{{00000..{last}}}" if num_shards > 1 else "00000"
    return f"{root_uri}/{FOLDER}/shard-{body}.tar"


def build_tar(keys: list[str], rows: pa.Table, pngs: list[bytes]) -> bytes:
    """The tar bytes of one shard: per sample ``<key>.json`` (its manifest row) then ``<key>.png``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for key, row, png in zip(keys, json_rows(rows), pngs):
            mtime = 0
            doc = json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode()
            for name, data in ((f"{key}.json", doc), (f"{key}.png", png)):
                info = tarfile.TarInfo(name)
                info.size, info.mtime, info.mode = len(data), mtime, 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def member_offsets(tar_bytes: bytes) -> dict[str, tuple[int, int]]:
    """``name -> (offset of the data, size)`` of every member (for random access by byte range)."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers()}


def export_webdataset(run: FinishedRun, shard_size: int) -> str:
    """Write (or finish) the run's WebDataset shards; returns ``<run>/webdataset``."""
    storage, manifest = run.storage, run.manifest
    ranges = shard_ranges(manifest.num_rows, shard_size)
    record = {"format": "webdataset", "run_id": run.run_id, "shard_size": shard_size, "samples": manifest.num_rows,
              "shards": len(ranges), "manifest_sha256": run.manifest_sha256}
    if finished_export(storage, FOLDER, record):
        return storage.uri(FOLDER)

    # 1. What is already there: complete shards are skipped; files of another layout are refused
    names = [shard_name(i) for i in range(len(ranges))]
    planned = [f"{FOLDER}/{n}{ext}" for n in names for ext in (".tar", ".parquet", ".stats.json")]
    present = refuse_strangers(storage, FOLDER, planned)
    start_export(storage, FOLDER, record)
    keys_all = [sample_key(c, i) for c, i in zip(manifest.column("concept_id").to_pylist(),
                                                   manifest.column("image_id").to_pylist())]

    for name, rows_range in zip(names, ranges):
        rows = manifest.slice(rows_range.start, len(rows_range))
        keys = keys_all[rows_range.start:rows_range.stop]
        stats = {"shard": f"{name}.tar", "index": f"{name}.parquet", "run_id": run.run_id, "shard_size": shard_size,
                 "samples": len(keys), "first_key": keys[0] if keys else None, "last_key": keys[-1] if keys else None}
        stats_key = f"{FOLDER}/{name}.stats.json"
        if stats_key in present and f"{FOLDER}/{name}.tar" in present and f"{FOLDER}/{name}.parquet" in present:
            done = json.loads(storage.read_bytes(stats_key))
            if {k: done.get(k) for k in stats} == stats:
                continue
            raise ValueError(f"{storage.uri(stats_key)} describes another shard than this export would write "
                             f"({done.get('samples')} samples from {done.get('first_key')!r}); "
                             f"remove {storage.uri(FOLDER)} to export again")
        # 2. The shard: tar, then its index, then its stats (the completion marker)
        tar_bytes = build_tar(keys, rows, read_images(storage, rows))
        offsets = member_offsets(tar_bytes)
        index = pa.table({
            "key": pa.array(keys, pa.string()),
            "json_offset": pa.array([offsets[f"{k}.json"][0] for k in keys], pa.int64()),
            "json_size": pa.array([offsets[f"{k}.json"][1] for k in keys], pa.int64()),
            "png_offset": pa.array([offsets[f"{k}.png"][0] for k in keys], pa.int64()),
            "png_size": pa.array([offsets[f"{k}.png"][1] for k in keys], pa.int64()),
        })
        for col in rows.column_names:
            index = index.append_column(rows.schema.field(col), rows.column(col))
        index_bytes = parquet_bytes(index)
        storage.write_bytes(f"{FOLDER}/{name}.tar", tar_bytes)
        storage.write_bytes(f"{FOLDER}/{name}.parquet", index_bytes)
        storage.write_bytes(stats_key, dumps({**stats, "tar_bytes": len(tar_bytes),
                                              "tar_sha256": hashlib.sha256(tar_bytes).hexdigest(),
                                              "index_bytes": len(index_bytes)}))

    # 3. The export's own marker, last
    finish_export(storage, FOLDER, record)
    return storage.uri(FOLDER)
