"""Resume by content: what of a concept is already done, and what is damaged or stale.

A concept is complete when its manifest part is readable, was written for the concept's row as
the table says it now, and every image it lists exists, is not empty and hashes to the part's
sha256 (no model is loaded for it). A damaged part, image or seeds file is named in a warning
and rebuilt; only missing images are generated. The outputs of a concept whose row changed
(name, references, prompt, num_images) are discarded and made again (:func:`discard_concept`):
its seeds file and manifest part record the row they were made for.
"""

from __future__ import annotations

import io
import logging
from concurrent.futures import ThreadPoolExecutor

from PIL import Image
from pyarrow import ArrowException

from normguide.data import layout, run_record
from normguide.data import manifest as mf
from normguide.data.images import sha256_hex
from normguide.data.schema import Concept, changed_fields
from normguide.data.seeds import SeedsFile, seeds_key
from normguide.pipeline.context import RunContext, check_lease
from normguide.pipeline.results import GeneratedConcept

_log = logging.getLogger(__name__)


def completed_concept(ctx: RunContext, concept: Concept) -> GeneratedConcept | None:
    """The concept's record when its manifest part is readable, was written for the concept's
    row as the table says it now, and every image it lists exists, is not empty and has the
    sha256 the part records; else None, and the concept is rebuilt (a damaged part or image is
    named in a warning; the outputs of a changed row are discarded, see :func:`discard_concept`).

    Cost: one listing per concept for the sizes, then every listed image is read back and hashed
    (8 at a time): the part records no byte sizes, so only the hash catches a truncated image.
    """
    storage = ctx.storage
    concept_id = concept.concept_id
    if not storage.exists(mf.part_key(concept_id)):
        return None
    table = read_part(ctx, concept_id)
    if table is None:
        return None
    if changed := changed_fields(mf.part_concept(table), concept):
        discard_concept(ctx, concept, changed, found=storage.uri(mf.part_key(concept_id)))
        return None
    keys = [mf.image_key(concept_id, i) for i in table.column("image_id").to_pylist()]
    sizes = storage.sizes(keys)
    if len(sizes) != len(keys):
        return None
    damaged = _damaged_images(ctx, keys, sizes, table.column("sha256").to_pylist())
    if damaged:
        _log.warning("concept %r is not complete: %d image(s) listed in %s are damaged and will be "
                     "generated again: %s", concept_id, len(damaged), storage.uri(mf.part_key(concept_id)),
                     "; ".join(f"{storage.uri(k)} ({why})" for k, why in damaged.items()))
        return None
    z = [v for v in table.column("seed_zscore").to_pylist() if v is not None]
    return GeneratedConcept(concept_id=concept_id, images=table.num_rows, generated=0, skipped=True,
                            methods=sorted(set(table.column("method").to_pylist())),
                            mean_seed_zscore=sum(z) / len(z) if z else None)


#: Columns a manifest part must have to be reused (else it is rebuilt).
_PART_NEEDS = ("image_id", "sha256", "method", "seed_zscore")


def read_part(ctx: RunContext, concept_id: str, *, warn: bool = True):
    """The concept's manifest part as a table, or None (with a warning naming it) when it cannot
    be read: truncated, not Parquet, or missing the columns a resume needs."""
    key = mf.part_key(concept_id)
    try:
        table = mf.parquet_to_table(ctx.storage.read_bytes(key))
        missing = [c for c in _PART_NEEDS if c not in table.column_names]
        if missing:
            raise ValueError(f"no column(s) {missing}")
    except (OSError, ValueError, ArrowException) as exc:  # not StorageError: the endpoint is not the file
        if warn:
            _log.warning("manifest part %s is unreadable (%s: %s); concept %r will be rebuilt",
                         ctx.storage.uri(key), type(exc).__name__, exc, concept_id)
        return None
    return table


def _damaged_images(ctx: RunContext, keys: list[str], sizes: dict[str, int],
                    shas: list[str | None]) -> dict[str, str]:
    """key -> what is wrong, for the images that are empty or whose bytes do not hash to the
    sha256 recorded for them (read back and hashed 8 at a time)."""
    damaged = {k: "empty (0 bytes)" for k in keys if sizes.get(k, 0) == 0}
    to_hash = [(k, sha) for k, sha in zip(keys, shas) if k not in damaged and sha]

    def check(item: tuple[str, str]) -> tuple[str, str | None]:
        key, sha = item
        data = ctx.storage.read_bytes(key)
        got = sha256_hex(data)
        return key, None if got == sha else f"{len(data)} bytes whose sha256 {got[:12]}... is not the recorded {sha[:12]}..."

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="normguide-verify") as pool:
        damaged.update({k: why for k, why in pool.map(check, to_hash) if why})
    return damaged


def reusable_images(ctx: RunContext, concept_id: str, keys: list[str]) -> dict[str, mf.ImageRecord]:
    """Records of the existing images ``keys`` that can be reused: they decode completely and,
    where an earlier manifest part of the concept records their sha256, match it. The others are
    named in a warning (and left to be generated again, which overwrites them)."""
    recorded: dict[str, str] = {}
    if keys and ctx.storage.exists(mf.part_key(concept_id)):
        part = read_part(ctx, concept_id, warn=False)
        if part is not None:
            recorded = {mf.image_key(concept_id, i): sha for i, sha in
                        zip(part.column("image_id").to_pylist(), part.column("sha256").to_pylist()) if sha}

    def check(key: str) -> tuple[str, mf.ImageRecord | None, str | None]:
        data = ctx.storage.read_bytes(key)
        if not data:
            return key, None, "empty (0 bytes)"
        if key in recorded and sha256_hex(data) != recorded[key]:
            return key, None, "its sha256 is not the one its manifest part records"
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()  # the whole image: a truncated PNG fails here, not only its header
                return key, image_record(data, im), None
        except Exception as exc:  # noqa: BLE001 - any decoding failure means a damaged file
            return key, None, f"not a readable image ({type(exc).__name__}: {exc})"

    reusable: dict[str, mf.ImageRecord] = {}
    damaged: list[str] = []
    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="normguide-verify") as pool:
        for key, record, why in pool.map(check, keys):
            if record is not None:
                reusable[key] = record
            else:
                damaged.append(f"{ctx.storage.uri(key)} ({why})")
    if damaged:
        _log.warning("concept %r: %d existing image(s) are damaged and will be generated again: %s",
                     concept_id, len(damaged), "; ".join(damaged))
    return reusable


def missing_parts(ctx: RunContext, concept_ids: list[str]) -> list[str]:
    """Concept ids whose manifest part does not exist yet (one listing, not one request each)."""
    have = ctx.storage.existing([mf.part_key(c) for c in concept_ids])
    return [c for c in concept_ids if mf.part_key(c) not in have]


def part_states(ctx: RunContext, concepts: list[Concept]) -> dict[str, list[str] | None]:
    """Per concept id: None when it has no manifest part yet; else the columns of its row that
    changed since its part was made ([]: none; its images are not checked here,
    :func:`completed_concept` does that). Read-only: the run that redoes a changed concept
    discards its old outputs. Reads every existing part (8 at a time)."""
    have = ctx.storage.existing([mf.part_key(c.concept_id) for c in concepts])

    def state(concept: Concept) -> list[str] | None:
        if mf.part_key(concept.concept_id) not in have:
            return None
        table = read_part(ctx, concept.concept_id, warn=False)
        return changed_fields(mf.part_concept(table), concept) if table is not None else []

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="normguide-parts") as pool:
        return {c.concept_id: st for c, st in zip(concepts, pool.map(state, concepts))}


def parts_to_redo(ctx: RunContext, concepts: list[Concept]) -> list[str]:
    """Concept ids whose manifest part is missing, or was made for a row that has changed since."""
    return [cid for cid, changed in part_states(ctx, concepts).items() if changed is None or changed]


def discard_concept(ctx: RunContext, concept: Concept, changed: list[str], *, found: str) -> None:
    """Delete a concept's outputs that were made for an earlier version of its row (``changed``
    names the columns that differ; ``found`` is the file that says so), so it is made again from
    scratch: ``_SUCCESS`` first (the published dataset no longer matches the table, so readers
    wait), then its manifest part, its images, and its seeds file last. Interrupted anywhere, a
    rerun finds the seeds file (or part) still naming the old row and carries on from there."""
    storage = ctx.storage
    cid = concept.concept_id
    _log.warning("concept %r changed in the concept table since %s was written (%s); its images, "
                 "seeds and manifest part are discarded and made again", cid, found, ", ".join(changed))
    check_lease(ctx)
    storage.delete([run_record.SUCCESS])
    storage.delete([mf.part_key(cid)])
    storage.delete([k for k in storage.list(layout.images_prefix(cid)) if k.startswith(f"{layout.images_prefix(cid)}/")])
    storage.delete([seeds_key(cid)])
    storage.delete([layout.refine_timing_key(cid)])


def read_seeds(ctx: RunContext, concept_id: str) -> SeedsFile | None:
    """The concept's seeds file, or None when there is none or it is damaged (truncated, not a
    seeds file): a damaged one is named in a warning and inverted again, which replaces it."""
    key = seeds_key(concept_id)
    if not ctx.storage.exists(key):
        return None
    try:
        return SeedsFile.from_bytes(ctx.storage.read_bytes(key), where=ctx.storage.uri(key))
    except ValueError as exc:  # from_bytes names the file
        _log.warning("%s; concept %r will be inverted again", exc, concept_id)
        return None

def image_record(blob: bytes, image: Image.Image | None = None,
                  precision_fallback: str | None = None) -> mf.ImageRecord:
    if image is None:
        with Image.open(io.BytesIO(blob)) as im:
            size = im.size
    else:
        size = image.size
    return mf.ImageRecord(sha256=sha256_hex(blob), width=size[0], height=size[1],
                          precision_fallback=precision_fallback)


def complete_concepts(ctx: RunContext, concepts: list[Concept]) -> dict[str, GeneratedConcept]:
    """``{concept_id: its record}`` for the concepts that are complete (:func:`completed_concept`)."""
    return {c.concept_id: done for c in concepts if (done := completed_concept(ctx, c)) is not None}
