"""The steps of one dataset run, top to bottom. Each takes a :class:`RunContext` and typed inputs
and returns a typed record (``results.py``); the drivers (``local.py``, and the Prefect flows in
``flows/``) only call them in order.

Layout under the run root (DESIGN.md)::

    run.json                          written at the start, rewritten at the end (status: running,
                                      complete, failed or interrupted)
    seeds/<concept_id>.safetensors    inverted seeds; after planning also centroids and planned seeds
    images/<concept_id>/<image_id>.png
    manifest/part-<concept_id>.parquet   written only after all the concept's images exist
    manifest.parquet                  all parts, written only after every part exists
    _SUCCESS                          written last

Resume rules: a concept whose part is readable and whose images all exist, are not empty and
hash to the part's sha256 is complete (no model is loaded for it); a damaged part, image or
seeds file is named in a warning and rebuilt; a seeds file with a plan is reused; only missing
images are generated; a run with ``_SUCCESS`` whose run.json covers the current concept table is
a no-op that loads no model; concepts added to the table reopen it. Nothing complete is ever
rewritten but the consolidated manifest, run.json and ``_SUCCESS`` of a reopened run, and the
outputs of a concept whose row changed: its seeds file and manifest part record the row they
were made for, and a changed row (name, references, prompt, num_images) has them discarded and
made again (``discard_concept``).
"""

from __future__ import annotations

import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor

from PIL import Image
from pyarrow import ArrowException

from normguide import __version__, progress
from normguide.data import layout
from normguide.data import manifest as mf
from normguide.data import references as reference_io
from normguide.data import run_record
from normguide.data.images import (
    ReferenceImageError,
    decode_reference,
    encode_png,
    sha256_hex,
)
from normguide.data.parquet_io import read_frame
from normguide.data.schema import Concept, changed_fields, parse_concept_table
from normguide.data.seeds import SeedsFile, seeds_key
from normguide.pipeline.context import RunContext
from normguide.pipeline.results import GeneratedConcept, PreparedRun, SeedsRecord

_log = logging.getLogger(__name__)


# -- 1. prepare --------------------------------------------------------------------------------
def model_label(model_id: str, is_demo: bool, note: str | None) -> str:
    """The manifest's ``model`` value: the id, and for the built-in demos what they are."""
    return f"{model_id} ({note})" if is_demo and note else model_id


def prepare(ctx: RunContext) -> PreparedRun:
    """The checks that need no model and write nothing: the output is writable, a resumed run
    has the same content settings, and whether the run is already complete for the concept
    table as it is now (``_SUCCESS`` and run.json's table digest; a table that gained or changed
    concepts since reopens the run). A complete run reports the model from its run.json; call
    :func:`start` before any model work otherwise."""
    from normguide.pipeline.refine import check_feature_model

    check_feature_model(ctx.config)  # a missing or non-CLIP refine.feature_model, before any work
    storage = ctx.storage
    storage.check_writable()
    record = storage.read_bytes(run_record.RUN_JSON) if storage.exists(run_record.RUN_JSON) else None
    if record is not None:
        run_record.check_same_content(ctx.config, record, storage.uri(run_record.RUN_JSON))
    complete = record is not None and storage.exists(run_record.SUCCESS) and run_record.covers_table(record, ctx.config)
    m = (json.loads(record).get("model") or {}) if record is not None else {}
    is_demo = bool(m.get("is_demo"))
    return PreparedRun(run_id=ctx.run_id, output_root=storage.root, complete=complete, is_demo=is_demo,
                       model=model_label(str(m.get("id") or ctx.config.model), is_demo, m.get("note")),
                       model_note=m.get("note"))


def start(ctx: RunContext) -> PreparedRun:
    """Load the model (a bad model fails before any concept) and start run.json: a new record,
    or a resumed one marked ``running`` again."""
    from normguide.pipeline.refine import check_model

    storage = ctx.storage
    warnings = drawing_warnings(ctx)
    for line in warnings:
        _log.warning("%s", line)
    progress.announce(f"loading the model {ctx.config.model}")
    model = ctx.model()
    check_model(ctx.config, model)  # refinement of a family that cannot backpropagate
    check_lease(ctx)
    if not storage.exists(run_record.RUN_JSON):
        storage.write_bytes(run_record.RUN_JSON, run_record.new_record(ctx.config, output_root=storage.root, model={
            "id": model.model_id, "revision": model.revision, "family": model.family, "is_demo": model.is_demo,
            "note": model.note, "seed_shape": list(model.seed_shape), "scheduler": model.scheduler,
        }, warnings=warnings))
    else:
        record = storage.read_bytes(run_record.RUN_JSON)
        if json.loads(record).get("status") != "running":
            storage.write_bytes(run_record.RUN_JSON, run_record.with_status(record, "running", config=ctx.config))
    return PreparedRun(run_id=ctx.run_id, output_root=storage.root, complete=False,
                       model=model_label(model.model_id, model.is_demo, model.note),
                       is_demo=model.is_demo, model_note=model.note)


def drawing_warnings(ctx: RunContext, concepts: list[Concept] | None = None) -> list[str]:
    """What the model cannot draw of the concept table (``normguide.vocabulary``): prompt words
    its tokenizer does not know, and for the demo concepts that are not digits. Warnings, never
    errors; loads no model (the tokenizer only, without torch)."""
    from normguide.vocabulary import drawing_warnings as check

    try:
        rows = load_concepts(ctx) if concepts is None else concepts
        return check(ctx.config.model, rows, ctx.config.prompt_template)
    except Exception as exc:  # noqa: BLE001 - a check that cannot run must not stop the run
        _log.debug("drawing check skipped: %s", exc)
        return []


def acquire_lease(ctx: RunContext, concept_ids: list[str] | None, *, owner: str, coordinator: bool = False):
    """The run's claim in the output root's lease (``normguide.data.storage.lease``): every
    concept for a whole run (``concept_ids`` None), those concepts for a subset or shard, or a
    fan-out parent's ``coordinator`` claim. A live run whose claim overlaps is named in
    :class:`LeaseHeld`. The steps then check it before each write (:func:`check_lease`)."""
    return ctx.storage.acquire_lease(owner=owner, concepts=concept_ids, coordinator=coordinator)


def check_lease(ctx: RunContext, *, finalizing: bool = False) -> None:
    """Before a write: raise ``LeaseLost`` if this process's lease on the run root was lost
    (one read of the lease object); ``finalizing`` upgrades a subset's claim to every concept
    (``LeaseHeld`` while another writer is live). No lease held in this process: no check."""
    from normguide.data.storage.lease import check_held

    check_held(ctx.storage, finalizing=finalizing)


def record_status(ctx: RunContext, status: str, error: str | None = None) -> None:
    """Mark run.json ``failed`` or ``interrupted`` (with the error); a complete run, or one
    that never started (no run.json), is left as it is. Never raises: it runs on the way out
    of a failure, which must stay the error the user sees."""
    storage = ctx.storage
    try:
        check_lease(ctx)  # a lost lease: another run owns run.json now
        if not storage.exists(run_record.RUN_JSON) or storage.exists(run_record.SUCCESS):
            return
        record = storage.read_bytes(run_record.RUN_JSON)
        storage.write_bytes(run_record.RUN_JSON, run_record.with_status(record, status, error=error))
    except Exception as exc:  # noqa: BLE001 - reported, never masks the original failure
        import logging

        logging.getLogger("normguide").warning("could not mark run.json %s: %s", status, exc)


def is_complete(ctx: RunContext) -> bool:
    """Whether the run has ``_SUCCESS`` and its run.json covers the current concept table
    (no model)."""
    storage = ctx.storage
    if not storage.exists(run_record.SUCCESS) or not storage.exists(run_record.RUN_JSON):
        return False
    return run_record.covers_table(storage.read_bytes(run_record.RUN_JSON), ctx.config)


# -- 2. the concept table ------------------------------------------------------------------------
def load_concepts(ctx: RunContext, concept_ids: list[str] | None = None) -> list[Concept]:
    """Read and validate the concept table; every bad reference URI scheme is reported at once
    (:func:`normguide.data.references.load_concepts`, which ``validate`` uses too)."""
    return reference_io.load_concepts(ctx.config, ctx.read_input, concept_ids)


def read_references(ctx: RunContext, concept: Concept) -> list[Image.Image]:
    """The concept's reference images, decoded; every bad one of the concept is named in one
    :class:`ReferenceImageError` (:func:`normguide.data.references.read_references`)."""
    return reference_io.read_references(ctx.read_input, concept)


def check_references(ctx: RunContext, concepts: list[Concept]) -> dict[str, str]:
    """Read and decode every reference of ``concepts`` that still needs inverting (a concept
    with a seeds file or a manifest part is skipped), without a model: what ``run`` would
    reject is found before any model or Prefect start.

    Returns concept id -> what is wrong with its references (every bad file of the concept
    named), for the concepts a run skips while it makes the others (each is logged as an
    error). Raises one :class:`ReferenceImageError` naming every bad reference of every concept
    instead when ``config.strict_references`` is set, or when no concept would be left to make.
    """
    have = ctx.storage.existing([k for c in concepts for k in (seeds_key(c.concept_id), mf.part_key(c.concept_id))])
    bad: dict[str, str] = {}
    for c in concepts:
        if seeds_key(c.concept_id) in have or mf.part_key(c.concept_id) in have:
            continue
        try:
            read_references(ctx, c)
        except ReferenceImageError as exc:
            bad[c.concept_id] = str(exc)
    if bad and (ctx.config.strict_references or len(bad) == len(concepts)):
        raise ReferenceImageError(f"{len(bad)} concept(s) have unusable reference images:\n  " + "\n  ".join(bad.values()))
    for cid, why in bad.items():
        _log.error("concept %s is skipped: %s", cid, why)
    return bad


def skipped_outcomes(bad: dict[str, str]) -> dict:
    """The failed outcomes of the concepts :func:`check_references` skipped."""
    from normguide.pipeline.results import ConceptOutcome

    return {cid: ConceptOutcome.failed(cid, f"skipped, unusable reference images: {why}") for cid, why in bad.items()}


def outline(ctx: RunContext, concepts: list[Concept]) -> str:
    """What the run will do next, in one line: a new run names its concepts, images and steps; a
    resumed one says how many concepts are complete ("resuming: 1 of 3 concepts complete").
    One listing of the manifest parts; no model."""
    cfg = ctx.config
    ids = [c.concept_id for c in concepts]
    missing = missing_parts(ctx, ids)
    images = sum((c.num_images or cfg.plan.num_images) for c in concepts)
    steps_text = (f"inversion {cfg.inversion.num_inference_steps} steps per reference, generation "
                  f"{cfg.generation.num_inference_steps} steps per image")
    if ctx.storage.exists(run_record.RUN_JSON):
        done = len(ids) - len(missing)
        head = f"resuming: {done} of {len(ids)} concept(s) complete"
        if missing:
            head += f"; next: {', '.join(missing)} ({steps_text})"
        return head
    return (f"{len(ids)} concept(s) ({', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''}), "
            f"{images * len(cfg.plan.methods)} image(s) with method(s) {', '.join(cfg.plan.methods)}; {steps_text}; "
            f"next: loading the model {cfg.model}, then inverting {ids[0] if ids else '-'}")


# -- 3. per concept ------------------------------------------------------------------------------
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
    table = _read_part(ctx, concept_id)
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


def _read_part(ctx: RunContext, concept_id: str, *, warn: bool = True):
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


def _reusable_images(ctx: RunContext, concept_id: str, keys: list[str]) -> dict[str, mf.ImageRecord]:
    """Records of the existing images ``keys`` that can be reused: they decode completely and,
    where an earlier manifest part of the concept records their sha256, match it. The others are
    named in a warning (and left to be generated again, which overwrites them)."""
    recorded: dict[str, str] = {}
    if keys and ctx.storage.exists(mf.part_key(concept_id)):
        part = _read_part(ctx, concept_id, warn=False)
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
                return key, _image_record(data, im), None
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
        table = _read_part(ctx, concept.concept_id, warn=False)
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


def seeds_record(ctx: RunContext, seeds: SeedsFile) -> SeedsRecord:
    return SeedsRecord(concept_id=seeds.concept_id, seeds_uri=ctx.storage.uri(seeds_key(seeds.concept_id)),
                       num_seeds=seeds.num_seeds, planned=len(seeds.meta.get("plan", [])))


def invert(ctx: RunContext, concept: Concept) -> SeedsFile:
    """Read the concept's reference images, invert them to seeds, save the seeds file.

    An existing seeds file is returned as it is (inversion is deterministic; a resumed run
    reuses it), unless it was made for an earlier version of the concept's row: then the
    concept's outputs are discarded and it is inverted again.
    """
    import torch

    from normguide.diffusion import invert_images, prepare_image
    from normguide.diffusion.prompts import check_prompt_tokens

    cid = concept.concept_id
    if (found := read_seeds(ctx, cid)) is not None:
        if not (changed := changed_fields(found.meta.get("concept"), concept)):
            return found
        discard_concept(ctx, concept, changed, found=ctx.storage.uri(seeds_key(cid)))
    # 1. Read and check the prompt and every reference (errors name the concept and the file)
    model = ctx.model()
    prompt = concept.resolved_prompt(ctx.config.prompt_template)
    check_prompt_tokens(model, prompt, concept_id=cid, setting=ctx.config.limits.max_prompt_tokens)
    images = [prepare_image(im, model.resolution) for im in read_references(ctx, concept)]
    # 2. DDIM inversion
    inv = ctx.config.inversion
    seeds_out, errors, fallbacks = [], [], []
    with progress.stage(cid, "inversion", total=len(images)) as bar:
        for start in range(0, len(images), inv.batch_size):  # one batch per call, so progress is per batch
            part = invert_images(model, images[start : start + inv.batch_size], prompt,
                                 num_inference_steps=inv.num_inference_steps, guidance_scale=inv.guidance_scale,
                                 batch_size=inv.batch_size, reconstruction=inv.reconstruction,
                                 batch_invariant=inv.batch_invariant)
            seeds_out.append(part.seeds)
            errors += part.reconstruction_error or []
            fallbacks += part.precision_fallback
            bar.advance(len(part.seeds))
    inverted = torch.cat(seeds_out)
    # 3. Save the seeds (the expensive step's checkpoint)
    seeds = SeedsFile(inverted=inverted.contiguous(), meta={
        "concept_id": cid, "concept": concept.definition(), "num_seeds": len(images),
        "reference_uris": list(concept.reference_uris),
        "prompt": prompt, "reconstruction_error": errors if inv.reconstruction else None, "model": model.model_id,
        "model_revision": model.revision, "inversion_steps": inv.num_inference_steps,
        "inversion_guidance": inv.guidance_scale, "seed_shape": list(model.seed_shape),
        "precision_fallback": fallbacks,
    })
    check_lease(ctx)
    ctx.storage.write_bytes(seeds_key(cid), seeds.to_bytes())
    return seeds


def plan(ctx: RunContext, concept: Concept, seeds: SeedsFile) -> SeedsFile:
    """Plan the concept's seeds for every configured method and save them in its seeds file
    (a file that already holds a plan is returned as it is)."""
    from normguide.data.plan import plan_seeds

    if seeds.has_plan:
        return seeds
    p = ctx.config.plan
    planned = seeds.with_plan(plan_seeds(
        seeds.inverted, concept_id=concept.concept_id, methods=p.methods,
        num_images=concept.num_images or p.num_images, include_centroid=p.include_centroid,
        pair_paths=p.pair_paths, centroid_paths=p.centroid_paths, include_inversions=p.include_inversions,
        t_values=p.t_values, base_seed=ctx.config.seed,
    ))
    check_lease(ctx)
    ctx.storage.write_bytes(seeds_key(concept.concept_id), planned.to_bytes())
    return planned


def generate(ctx: RunContext, concept: Concept, seeds: SeedsFile) -> GeneratedConcept:
    """Generate the concept's missing images, then write its manifest part.

    Images stream out per batch (the write of batch i overlaps the generation of batch i+1);
    images that already exist are not regenerated, only read back to check and hash them (a
    damaged one, empty or undecodable, is named in a warning and generated again).
    """
    cid = concept.concept_id
    if (done := completed_concept(ctx, concept)) is not None:
        return done
    from normguide.diffusion.prompts import check_prompt_tokens

    rows = seeds.plan_rows
    storage = ctx.storage
    model = ctx.model()
    prompt = concept.resolved_prompt(ctx.config.prompt_template)
    check_prompt_tokens(model, prompt, concept_id=cid, setting=ctx.config.limits.max_prompt_tokens)
    gen = ctx.config.generation

    # 1. Which images are missing; the ones an earlier, interrupted run wrote are read back,
    #    checked (they decode, and match an earlier part's sha256) and hashed; damaged ones
    #    are generated again
    keys = [mf.image_key(cid, r.image_id) for r in rows]
    present = storage.existing(keys)
    reused = _reusable_images(ctx, cid, [k for k in keys if k in present])
    todo = [i for i, k in enumerate(keys) if k not in reused]

    # 2. Generate and write them
    records = _generate_and_write(ctx, prompt, seeds, todo, keys) if todo else {}
    for i, k in enumerate(keys):
        if i not in records:
            records[i] = reused[k]

    # 4. The manifest part, written only now that every image exists
    part = mf.concept_rows(
        mf.RowContext(run_id=ctx.run_id, concept_id=cid, name=concept.name, prompt=prompt,
                      model=model_label(model.model_id, model.is_demo, model.note),
                      model_revision=model.revision, scheduler=model.scheduler,
                      num_inference_steps=gen.num_inference_steps, guidance_scale=gen.guidance_scale,
                      normguide_version=__version__),
        seeds, keys, [records[i] for i in range(len(rows))],
    )
    check_lease(ctx)
    storage.write_bytes(mf.part_key(cid), mf.rows_to_parquet(part, concept=concept.definition()))
    z = [r["seed_zscore"] for r in part]
    return GeneratedConcept(concept_id=cid, images=len(rows), generated=len(todo), skipped=False,
                            methods=sorted({r.method for r in rows}), mean_seed_zscore=sum(z) / len(z) if z else None)


def _image_record(blob: bytes, image: Image.Image | None = None,
                  precision_fallback: str | None = None) -> mf.ImageRecord:
    if image is None:
        with Image.open(io.BytesIO(blob)) as im:
            size = im.size
    else:
        size = image.size
    return mf.ImageRecord(sha256=sha256_hex(blob), width=size[0], height=size[1],
                          precision_fallback=precision_fallback)


def _encode_and_write(storage, keys: list[str], idx: list[int], images, fallbacks) -> dict[int, mf.ImageRecord]:
    """PNG-encode, hash and write one generated batch (on the writer thread)."""
    blobs = [encode_png(im) for im in images]
    storage.write_many(list(zip(keys, blobs)))
    return {i: _image_record(b, im, fb) for i, b, im, fb in zip(idx, blobs, images, fallbacks)}


def _generate_and_write(ctx: RunContext, prompt: str, seeds: SeedsFile, todo: list[int],
                        keys: list[str]) -> dict[int, mf.ImageRecord]:
    """Generate the images of plan rows ``todo``; each batch is written on a writer thread while
    the next batch is generated."""
    from normguide.diffusion import generate_images

    gen = ctx.config.generation
    records: dict[int, mf.ImageRecord] = {}
    batches = generate_images(ctx.model(), seeds.generation_seeds[todo], prompt, num_inference_steps=gen.num_inference_steps,
                              guidance_scale=gen.guidance_scale, batch_size=gen.batch_size,
                              batch_invariant=gen.batch_invariant, vae_batch_size=gen.vae_batch_size)
    cid = seeds.concept_id
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="normguide-write") as writer, \
            progress.stage(cid, "generation", total=len(todo)) as bar:
        pending = None
        pos = 0
        for images in batches:
            idx = todo[pos : pos + len(images)]
            pos += len(images)
            if pending is not None:
                records.update(pending.result())
            # PNG encoding, hashing and the upload of this batch overlap the generation of the next
            check_lease(ctx)  # before each batch's write: a run that lost its lease writes no more
            pending = writer.submit(_encode_and_write, ctx.storage, [keys[i] for i in idx], idx, images,
                                    images.precision_fallback)
            bar.advance(len(images))
        if pending is not None:
            records.update(pending.result())
    return records


# -- 4. finalize -------------------------------------------------------------------------------
def finalize(ctx: RunContext, concept_ids: list[str]) -> str:
    """Consolidate the parts into ``manifest.parquet``, finish run.json, write ``_SUCCESS`` last.

    A run whose ``_SUCCESS`` covers the current table is left as it is; one reopened by a
    changed table gets a new manifest, run.json and ``_SUCCESS`` (each written atomically; the
    old manifest stays readable until the new one replaces it). Raises ``RuntimeError`` naming
    the concepts whose part is missing (nothing is written then). Needs no model.
    """
    storage = ctx.storage
    manifest_uri = storage.uri(layout.MANIFEST)
    if is_complete(ctx):
        return manifest_uri
    missing = missing_parts(ctx, concept_ids)
    if missing:
        raise RuntimeError(f"cannot finalize run {ctx.run_id!r}: manifest parts missing for concepts {missing}")
    check_lease(ctx, finalizing=True)  # every writer of the root excluded from here on
    if not storage.exists(run_record.RUN_JSON):
        raise RuntimeError(f"cannot finalize run {ctx.run_id!r}: {storage.uri(run_record.RUN_JSON)!r} is missing")
    parts = [storage.read_bytes(mf.part_key(c)) for c in concept_ids]
    manifest = mf.consolidate(parts)
    if storage.exists(layout.MANIFEST) and storage.read_bytes(layout.MANIFEST) != manifest:
        # a reopened run: the evaluation scored the earlier manifest; the card must not show it
        stale = sorted(storage.existing([EVAL_METRICS, EVAL_REPORT, EVAL_PLOT]))
        if stale:
            _log.warning("the evaluation of the earlier manifest (%s) is removed: the run was reopened; it is "
                         "evaluated again when evaluation is on, or with `normguide evaluate`",
                         ", ".join(storage.uri(k) for k in stale))
            storage.delete(stale)
    storage.write_bytes(layout.MANIFEST, manifest)
    storage.write_bytes(run_record.RUN_JSON, run_record.finished_record(
        storage.read_bytes(run_record.RUN_JSON), concepts=concept_ids, images=sum(mf.num_rows(p) for p in parts),
        table_digest=ctx.config.table_digest()))
    storage.write_bytes(run_record.SUCCESS, b"")
    return manifest_uri


# -- 5. evaluate -------------------------------------------------------------------------------
EVAL_METRICS, EVAL_REPORT, EVAL_PLOT = layout.EVAL_METRICS, layout.EVAL_REPORT, layout.EVAL_PLOT


def _judge_kind(ctx: RunContext) -> str | None:
    """'digits', 'clip' or None: which judge the evaluation settings ask for (nothing loaded)."""
    cfg = ctx.config.evaluation
    if cfg.judge != "auto":
        return cfg.judge
    return "clip" if cfg.clip_model else ("digits" if _run_model_id(ctx) == "demo" else None)


def evaluation_judge(ctx: RunContext):
    """The judge (feature model) the run's evaluation settings ask for, or None when there is
    none to use (``auto`` on a model without a built-in judge and no ``clip_model``)."""
    from normguide import evaluation as ev

    kind = _judge_kind(ctx)
    if kind == "digits":
        return ev.DigitsJudge()
    if kind == "clip":
        if not ctx.config.evaluation.clip_model:
            raise ValueError("evaluation.judge is 'clip' but evaluation.clip_model (a local CLIP directory) is not set")
        return ev.ClipJudge(ctx.config.evaluation.clip_model)
    return None


def wants_evaluation(ctx: RunContext, concept_names: list[str]) -> bool:
    """``evaluation.enabled``, or by default: whether a judge is available that knows these
    concepts (the demo's digit judge only knows digits: a demo run of other concepts is not
    evaluated unless asked, and then fails naming the concept). Loads no judge."""
    enabled = ctx.config.evaluation.enabled
    if enabled is not None:
        return enabled
    kind = _judge_kind(ctx)
    if kind == "digits":
        from normguide.evaluation import digit_index

        try:
            [digit_index(n) for n in concept_names]
        except ValueError:
            return False
    return kind is not None


def _run_model_id(ctx: RunContext) -> str | None:
    if ctx.storage.exists(run_record.RUN_JSON):
        return (json.loads(ctx.storage.read_bytes(run_record.RUN_JSON)).get("model") or {}).get("id")
    return ctx.config.model


def _decode(data: bytes, where: str) -> Image.Image:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.convert("RGB")
    except Exception as exc:  # noqa: BLE001 - named below
        raise ValueError(f"{where} is not a readable image ({exc})") from None


def _real_test_images(ctx: RunContext, judge, concepts: dict[str, str]) -> dict[str, list[Image.Image]] | None:
    """Held-out real images per concept: the configured table, else the demo's own test digits."""
    source = ctx.config.evaluation.real_test
    if source:
        table = parse_concept_table(ctx.read_input(source), source=source)
        found = {c.concept_id: c for c in table.concepts if c.concept_id in concepts}
        return {cid: [decode_reference(ctx.read_input(u), uri=u, concept_id=cid) for u in c.reference_uris]
                for cid, c in found.items()}
    from normguide.evaluation import DigitsJudge, digits_real_test

    return digits_real_test(concepts) if isinstance(judge, DigitsJudge) else None


def evaluate(ctx: RunContext, *, judge=None):
    """Score the run's images per concept and method (normguide.evaluation) and write
    ``eval/metrics.parquet``, ``eval/report.md`` and ``eval/metrics.png``.

    Needs a finalized run (its ``manifest.parquet``); the model is not loaded. ``judge``
    replaces the configured one.
    """
    import pandas as pd

    from normguide import evaluation as ev
    from normguide.pipeline.results import EvaluationRecord

    storage = ctx.storage
    # 1. Check inputs: a finalized run and a judge
    if not storage.exists(layout.MANIFEST):
        raise ValueError(f"run at {storage.root} has no manifest.parquet: it is missing or not complete "
                         "(finish it with `normguide run` first)")
    judge = judge or evaluation_judge(ctx)
    if judge is None:
        raise ValueError("no judge to evaluate with: this model has no built-in one; set evaluation.clip_model "
                         "to a local CLIP directory (or evaluation.judge)")
    # 2. The manifest, its images, and each concept's references
    manifest = read_frame(storage.read_bytes(layout.MANIFEST))
    images = [_decode(storage.read_bytes(key), storage.uri(key))
              for key in (mf.image_key(c, i) for c, i in zip(manifest.concept_id, manifest.image_id))]
    names = dict(zip(manifest.concept_id, manifest.name))
    references = {}
    for cid in names:
        seeds = read_seeds(ctx, cid)
        if seeds is None:
            raise ValueError(f"concept {cid!r}: no seeds file {storage.uri(seeds_key(cid))}, so its references are unknown")
        references[cid] = [decode_reference(ctx.read_input(u), uri=u, concept_id=cid) for u in seeds.meta["reference_uris"]]
    # 3. Metrics, report and plot
    metrics = ev.evaluate(manifest, images, references, judge, _real_test_images(ctx, judge, names), names,
                          include_references=True)  # the baseline row: the references themselves
    judge_name = getattr(judge, "name", type(judge).__name__)
    buf = io.BytesIO()
    metrics.to_parquet(buf, index=False)
    check_lease(ctx)
    storage.write_bytes(EVAL_METRICS, buf.getvalue())
    storage.write_bytes(EVAL_REPORT, ev.report_markdown(metrics, run_id=ctx.run_id, judge_name=judge_name).encode())
    storage.write_bytes(EVAL_PLOT, ev.plot_metrics(metrics))
    overall = metrics[metrics.concept_id == ev.ALL].set_index("method")
    headline = ["recognisability", "none_of_these", "coverage", "tstr_accuracy", "vendi"]
    return EvaluationRecord(
        metrics_uri=storage.uri(EVAL_METRICS), report_uri=storage.uri(EVAL_REPORT), judge=judge_name,
        per_method={m: {c: (None if pd.isna(v) else float(v)) for c, v in row.items() if c in headline}
                    for m, row in overall.iterrows()},
    )


# -- 6. exports and the report -------------------------------------------------------------------
def export(ctx: RunContext) -> dict[str, str]:
    """Write the configured export formats (``config.export``) of a finalized run
    (``normguide.export``); resumable, a finished export is not rewritten. Needs no model."""
    if not ctx.config.export:
        return {}
    from normguide.export import export_run

    return export_run(ctx, ctx.config.export, shard_size=ctx.config.export_shard_size)


def export_and_report(ctx: RunContext, formats, *, shard_size: int | None = None) -> dict[str, str]:
    """Export a finalized run to ``formats`` (``normguide export``, any time after the run), then
    rewrite its report and dataset card so they name and load what now exists (the card's
    ``configs`` point at the hf files). Needs no model."""
    from normguide.export import export_run

    uris = export_run(ctx, formats, shard_size=shard_size)
    report(ctx)
    return uris


def report(ctx: RunContext, evaluation=None):
    """Write the contact sheets, seed-norm plots, ``report/index.md`` and the dataset card
    ``README.md`` of a finalized run (``normguide.reporting``). Needs no model."""
    from normguide.reporting import write_report

    return write_report(ctx, evaluation=evaluation)


def wants_report(ctx: RunContext, already_complete: bool) -> bool:
    """A finalized run gets its report; a complete run seen again only when its card is missing
    or exports are configured (an export added later is written then; the card names it)."""
    return not already_complete or bool(ctx.config.export) or not ctx.storage.exists(layout.CARD)
