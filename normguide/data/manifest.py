"""The manifest: one row per image, as Parquet parts per concept and one consolidated table."""

from __future__ import annotations

import io
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq

MANIFEST_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("concept_id", pa.string()),
        ("name", pa.string()),
        ("prompt", pa.string()),
        ("image_uri", pa.string()),
        ("image_id", pa.string()),
        ("sha256", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("method", pa.string()),
        ("kind", pa.string()),
        ("source_refs", pa.list_(pa.string())),
        ("pair", pa.list_(pa.int32())),
        ("t", pa.float64()),
        ("seed_norm", pa.float64()),
        ("seed_zscore", pa.float64()),
        ("seed_log_prob", pa.float64()),
        ("model", pa.string()),
        ("model_revision", pa.string()),
        ("scheduler", pa.string()),
        ("num_inference_steps", pa.int32()),
        ("guidance_scale", pa.float64()),
        ("inversion_steps", pa.int32()),
        ("inversion_guidance", pa.float64()),
        ("reconstruction_error", pa.float64()),
        ("seed", pa.int64()),
        ("created_at", pa.timestamp("us", tz="UTC")),
        ("normguide_version", pa.string()),
        ("synthetic", pa.bool_()),
    ]
)
COLUMNS = tuple(MANIFEST_SCHEMA.names)


def part_key(concept_id: str) -> str:
    return f"manifest/part-{concept_id}.parquet"


def image_key(concept_id: str, image_id: str) -> str:
    return f"images/{concept_id}/{image_id}.png"


def seeds_key(concept_id: str) -> str:
    return f"seeds/{concept_id}.safetensors"


def rows_to_parquet(rows: list[dict]) -> bytes:
    """Parquet bytes of manifest rows, validated against :data:`MANIFEST_SCHEMA` (extra keys are an error)."""
    for r in rows:
        extra = set(r) - set(COLUMNS)
        if extra:
            raise ValueError(f"manifest row for image {r.get('image_id')!r} has unknown columns {sorted(extra)}")
    table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=MANIFEST_SCHEMA)
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def parquet_to_table(data: bytes) -> pa.Table:
    return pq.read_table(io.BytesIO(data))


def num_rows(data: bytes) -> int:
    """Row count of a Parquet part from its footer alone."""
    return pq.ParquetFile(io.BytesIO(data)).metadata.num_rows


def consolidate(parts: list[bytes]) -> bytes:
    """One manifest from its parts (in the order given); an image listed twice is an error."""
    tables = [parquet_to_table(p).cast(MANIFEST_SCHEMA) for p in parts]
    table = pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()
    counts = Counter(table.column("image_uri").to_pylist())
    if len(counts) != table.num_rows:
        dup = sorted(u for u, n in counts.items() if n > 1)[:5]
        raise ValueError(f"manifest parts list images more than once, e.g. {dup}")
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()
