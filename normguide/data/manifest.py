"""The manifest: one row per image, as Parquet parts per concept and one consolidated table.

:func:`concept_rows` is the one place that builds rows (columns in :data:`MANIFEST_SCHEMA`).

Deterministic: no column holds a wall-clock time (there is no ``created_at``; when a run started
and finished is in run.json), so two runs of the same configuration write byte-identical
parts and ``manifest.parquet``.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.parquet as pq

from normguide.data import layout
from normguide.data.parquet_io import read_metadata, read_table, release_unused_memory

MANIFEST_SCHEMA = pa.schema(
    [
        ("run_id", pa.string()),
        ("concept_id", pa.string()),
        ("name", pa.string()),
        ("prompt", pa.string()),
        ("file_name", pa.string()),  # the PNG, relative to the run root
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
        # seed health of the generation seed (normguide.geometry.health): largest |multi-scale lag-1
        # auto-correlation|, largest |channel mean|, smallest and largest channel variance
        ("seed_autocorr_max", pa.float64()),
        ("seed_channel_mean_absmax", pa.float64()),
        ("seed_channel_var_min", pa.float64()),
        ("seed_channel_var_max", pa.float64()),
        ("model", pa.string()),
        ("model_revision", pa.string()),
        ("scheduler", pa.string()),
        ("num_inference_steps", pa.int32()),
        ("guidance_scale", pa.float64()),
        ("inversion_steps", pa.int32()),
        ("inversion_guidance", pa.float64()),
        ("inverter", pa.string()),  # normguide.diffusion.inverters: ddim, flow-euler, flow-midpoint, ...
        ("reconstruction_error", pa.float64()),
        ("precision_fallback", pa.string()),  # None, or e.g. "inversion:full,generation:vae"
        ("seed", pa.int64()),
        # SeedSelect refinement (null without it): the plan method the seed started from, the
        # preset, steps applied, losses of the planned and of the generated seed, whether it fell
        # back to the planned seed, and the planned seed's chi z-score (seed_* describe the
        # seed the image was generated from: the refined one)
        ("refine_start", pa.string()),
        ("refine_preset", pa.string()),
        ("refine_iterations", pa.int32()),
        ("refine_semantic_start", pa.float64()),
        ("refine_semantic_end", pa.float64()),
        ("refine_appearance_start", pa.float64()),
        ("refine_appearance_end", pa.float64()),
        ("refine_fallback", pa.bool_()),
        ("refine_start_zscore", pa.float64()),
        ("normguide_version", pa.string()),
        ("synthetic", pa.bool_()),
    ]
)
COLUMNS = tuple(MANIFEST_SCHEMA.names)

if TYPE_CHECKING:
    from normguide.data.seeds import SeedsFile


@dataclass(frozen=True)
class ImageRecord:
    """What the manifest says about one written PNG."""

    sha256: str
    width: int
    height: int
    #: the float32 retry generation needed for this image (None, "vae" or "full"; normguide.diffusion.ddim)
    precision_fallback: str | None = None


@dataclass(frozen=True)
class RowContext:
    """The columns shared by every row of one concept's part."""

    run_id: str
    concept_id: str
    name: str
    prompt: str
    model: str
    model_revision: str
    scheduler: str
    num_inference_steps: int
    guidance_scale: float
    normguide_version: str


def concept_rows(ctx: RowContext, seeds: SeedsFile, file_names: list[str], images: list[ImageRecord]) -> list[dict]:
    """One manifest row per planned seed of ``seeds`` (row-aligned with ``file_names``, the
    images' paths relative to the run root, and ``images``), with the seed's norm, chi z-score
    and log-density under N(0, I_d). Paths are relative so a copied or synced dataset stays
    valid and the manifest does not depend on where the run was written."""
    import torch

    from normguide.geometry import ChiPrior
    from normguide.geometry.health import seed_health

    plan = seeds.plan_rows
    if not (len(plan) == len(file_names) == len(images)):
        raise ValueError(f"concept {ctx.concept_id!r}: {len(plan)} planned seeds, {len(file_names)} file names, {len(images)} images")
    flat = seeds.generation_seeds.reshape(len(plan), -1).to(torch.float64)
    prior = ChiPrior(flat.shape[1])
    norms = flat.norm(dim=-1)
    z = prior.zscore(flat)
    logp = prior.log_prob(norms)
    refined = seeds.refine_rows if seeds.is_refined else None
    start_z = prior.zscore(seeds.planned.reshape(len(plan), -1).to(torch.float64)) if refined else None
    # as written in the concept table (a relative path stays relative: no path of this machine in
    # the dataset); resolved only where a reference is read (the seeds file keeps the resolved ones)
    refs = (seeds.meta.get("concept") or {}).get("reference_uris") or seeds.meta["reference_uris"]
    rec_err = seeds.reconstruction_errors
    health = seed_health(seeds.generation_seeds)
    shared = asdict(ctx)
    rows = []
    for i, (r, file_name, im) in enumerate(zip(plan, file_names, images)):
        rows.append({
            **shared, "file_name": file_name, "image_id": r.image_id, **asdict(im),
            "method": r.method, "kind": r.kind,
            "source_refs": [refs[s] for s in r.sources],
            "pair": list(r.pair) if r.pair is not None else None, "t": r.t,
            "seed_norm": float(norms[i]), "seed_zscore": float(z[i]), "seed_log_prob": float(logp[i]),
            **_health_columns(health[i]),
            "inversion_steps": int(seeds.meta["inversion_steps"]),
            "inversion_guidance": float(seeds.meta["inversion_guidance"]),
            "inverter": _inverter(seeds, ctx.scheduler),
            # a planned seed is as good as the worst inversion it derives from
            "reconstruction_error": max(rec_err[s] for s in r.sources) if rec_err and r.sources else None,
            "seed": r.seed, "synthetic": True,
            "precision_fallback": _precision_fallback(seeds, r.sources, im.precision_fallback),
            **(_refine_columns(refined[i], float(start_z[i])) if refined else {}),
        })
    return rows


def _health_columns(record: dict) -> dict:
    return {"seed_autocorr_max": record["autocorr_max"],
            "seed_channel_mean_absmax": max(abs(v) for v in record["channel_mean"]),
            "seed_channel_var_min": min(record["channel_var"]), "seed_channel_var_max": max(record["channel_var"])}


#: The inverter a seeds file without an ``inverter`` entry was made with: the family default, which
#: is what inversion runs when the run config names none (the scheduler tells the family apart).
_DEFAULT_INVERTER = {"DDIMScheduler": "ddim", "FlowMatchEulerDiscreteScheduler": "flow-euler"}


def _inverter(seeds: SeedsFile, scheduler: str) -> str | None:
    return seeds.meta.get("inverter") or _DEFAULT_INVERTER.get(scheduler)


def _refine_columns(record: dict, start_zscore: float) -> dict:
    return {
        "refine_start": record["start"], "refine_preset": record["preset"], "refine_iterations": record["iterations"],
        "refine_semantic_start": record["semantic_start"], "refine_semantic_end": record["semantic_end"],
        "refine_appearance_start": record["appearance_start"], "refine_appearance_end": record["appearance_end"],
        "refine_fallback": record["fallback"], "refine_start_zscore": start_zscore,
    }


def _precision_fallback(seeds: SeedsFile, sources, generation: str | None) -> str | None:
    """The manifest's ``precision_fallback``: which float32 retries an image needed, in its source
    seeds' inversion and in its own generation, e.g. ``"inversion:full,generation:vae"``; None when
    everything ran in the model's precision (or was not recorded: seeds files and images written
    before the column existed)."""
    inverted = seeds.meta.get("precision_fallback") or []
    parts = [f"inversion:{fb}" for fb in sorted({inverted[s] for s in sources if s < len(inverted)} - {None})]
    if generation:
        parts.append(f"generation:{generation}")
    return ",".join(parts) or None


# the keys live in normguide.data.layout; these names are kept for callers
part_key = layout.part_key
image_key = layout.image_key


#: Key of a manifest part's Parquet metadata holding its concept's row (JSON of
#: ``Concept.definition()``): a rerun under the same run id compares it with the table's row.
CONCEPT_METADATA_KEY = b"normguide.concept"


def rows_to_parquet(rows: list[dict], *, concept: dict | None = None) -> bytes:
    """Parquet bytes of manifest rows, validated against :data:`MANIFEST_SCHEMA` (extra keys are
    an error); a part also records its concept's row (``concept``) in the file's metadata."""
    for r in rows:
        extra = set(r) - set(COLUMNS)
        if extra:
            raise ValueError(f"manifest row for image {r.get('image_id')!r} has unknown columns {sorted(extra)}")
    # column by column: no second copy of every row as a dict (a concept's rows are its peak)
    table = pa.Table.from_pydict({c: [r.get(c) for r in rows] for c in COLUMNS}, schema=MANIFEST_SCHEMA)
    if concept is not None:
        table = table.replace_schema_metadata({CONCEPT_METADATA_KEY: json.dumps(concept, sort_keys=True).encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    del table
    release_unused_memory()  # Arrow's pool would keep the table's pages to the end of the process
    return buf.getvalue()


def parquet_to_table(data: bytes) -> pa.Table:
    return read_table(data)


def part_concept(table: pa.Table) -> dict | None:
    """The concept row a manifest part was written for (None for parts written before it was
    recorded, or when it is unreadable)."""
    raw = (table.schema.metadata or {}).get(CONCEPT_METADATA_KEY)
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None


def num_rows(data: bytes) -> int:
    """Row count of a Parquet part from its footer alone."""
    return read_metadata(data).num_rows


def _with_all_columns(table: pa.Table) -> pa.Table:
    """A part written before a column existed gets it as nulls (columns in schema order)."""
    n = table.num_rows
    cols = [table.column(f.name) if f.name in table.column_names else pa.nulls(n, f.type) for f in MANIFEST_SCHEMA]
    return pa.Table.from_arrays(cols, schema=MANIFEST_SCHEMA) if table.column_names != list(COLUMNS) else table


def consolidate(parts: list[bytes]) -> bytes:
    """One manifest from its parts (in the order given); an image listed twice is an error."""
    tables = [_with_all_columns(parquet_to_table(p).replace_schema_metadata(None)).cast(MANIFEST_SCHEMA) for p in parts]
    table = pa.concat_tables(tables) if tables else MANIFEST_SCHEMA.empty_table()
    counts = Counter(table.column("file_name").to_pylist())
    if len(counts) != table.num_rows:
        dup = sorted(u for u, n in counts.items() if n > 1)[:5]
        raise ValueError(f"manifest parts list images more than once, e.g. {dup}")
    buf = io.BytesIO()
    pq.write_table(table, buf)
    del table, tables
    release_unused_memory()
    return buf.getvalue()
