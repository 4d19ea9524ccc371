"""The steps of one dataset run that make the dataset, top to bottom. Each takes a
:class:`RunContext` and typed inputs and returns a typed record (``results.py``); the recipe
(``recipe.py``) calls them in order through a runner (in this process, or Prefect tasks).

    1. prepare, start        output checks, run.json, the run's lease name
    2. load_concepts         the concept table's rows (read once per run), reference images
    3. invert, plan, generate  per concept: seeds file, then images and the manifest part
    4. finalize              manifest.parquet, run.json complete, _SUCCESS last

The other stages live beside this module: what is already done (``resume.py``), the evaluation
(``evaluation.py``) and exports and the report (``publish.py``); their step functions are
importable from here too.

Layout under the run root (DESIGN.md)::

    run.json                          written at the start, rewritten at the end (status: running,
                                      complete, failed or interrupted)
    seeds/<concept_id>.safetensors    inverted seeds; after planning also centroids and planned seeds
    images/<concept_id>/<image_id>.png
    manifest/part-<concept_id>.parquet   written only after all the concept's images exist
    manifest.parquet                  all parts, written only after every part exists
    _SUCCESS                          written last

Resume rules (``resume.py``): a complete concept is not read again beyond a hash check; a seeds
file with a plan is reused; only missing images are generated; a run with ``_SUCCESS`` whose
run.json covers the current concept table is a no-op that loads no model; concepts added to
the table reopen it. Nothing complete is ever rewritten but the consolidated manifest, run.json
and ``_SUCCESS`` of a reopened run, and the outputs of a concept whose row changed.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from normguide import __version__, progress
from normguide.config import check_same_content
from normguide.data import layout, run_record
from normguide.data import manifest as mf
from normguide.data import references as reference_io
from normguide.data.images import ReferenceImageError, encode_png
from normguide.data.input_policy import input_policy
from normguide.data.schema import Concept, changed_fields
from normguide.data.seeds import SeedsFile, seeds_key
from normguide.pipeline.context import RunContext, check_lease, read_references  # noqa: F401 - steps, importable from here
from normguide.pipeline.evaluation import (  # noqa: F401 - the evaluation step, importable from here
    EVAL_METRICS,
    EVAL_PLOT,
    EVAL_REPORT,
    evaluate,
    evaluation_judge,
    wants_evaluation,
)
from normguide.pipeline.publish import export, export_and_report, report, wants_report  # noqa: F401 - re-exported
from normguide.pipeline.results import GeneratedConcept, PreparedRun, SeedsRecord
from normguide.pipeline.resume import (  # noqa: F401 - resume checks, importable from here
    complete_concepts,
    completed_concept,
    discard_concept,
    image_record,
    missing_parts,
    part_states,
    parts_to_redo,
    read_seeds,
    reusable_images,
)
from normguide.pipeline.throughput import GenerationMeter, concept_cost, record_cost  # noqa: F401 - record_cost: a step

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
        check_same_content(ctx.config, record, storage.uri(run_record.RUN_JSON))
    complete = record is not None and storage.exists(run_record.SUCCESS) and run_record.covers_table(record, ctx.table.digest)
    if complete and (damage := _quick_damage(ctx)):  # a complete run whose files were deleted since
        _log.warning("run %s was complete, but %s: they are made again (the run is finalized anew)",
                     ctx.run_id, damage)
        complete = False
    if not complete:  # a bad CLIP directory or labelled table, before any model work
        from normguide.pipeline.longtail import check_evaluation_inputs

        check_evaluation_inputs(ctx.config, ctx.read_input, ctx.table.ids())
    m = (json.loads(record).get("model") or {}) if record is not None else {}
    is_demo = bool(m.get("is_demo"))
    return PreparedRun(run_id=ctx.run_id, output_root=storage.root, complete=complete, is_demo=is_demo,
                       model=model_label(str(m.get("id") or ctx.config.model), is_demo, m.get("note")),
                       model_note=m.get("note"))


def _quick_damage(ctx: RunContext) -> str | None:
    """What the quick check finds wrong with a complete run (None: nothing): its manifest missing
    or unreadable, or images it lists missing or empty. Cost: one read of manifest.parquet and one
    listing per concept folder (sizes only, no image read: a truncated image is found by
    ``normguide verify``, and by the resume check once the run is reopened)."""
    from normguide.data.parquet_io import read_table
    from normguide.data.verify import SHOWN, missing_images

    storage = ctx.storage
    try:
        rows = read_table(storage.read_bytes(layout.MANIFEST), columns=["concept_id", "image_id"]).to_pylist()
    except Exception as exc:  # noqa: BLE001 - missing or unreadable: either way, remade by finalizing
        return f"its {layout.MANIFEST} is missing or unreadable ({type(exc).__name__})"
    damaged = sorted(missing_images(storage, [(r["concept_id"], r["image_id"]) for r in rows]).items())
    if not damaged:
        return None
    named = ", ".join(f"{storage.uri(k)} ({why})" for k, why in damaged[:SHOWN])
    return f"{len(damaged)} image(s) are missing or empty: {named}" + (
        f" and {len(damaged) - SHOWN} more" if len(damaged) > SHOWN else "")


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
    from normguide.diffusion import resolved_inverter

    resolved_inverter(model, ctx.config.inversion.inverter)  # an inverter the family cannot run: refused up front
    check_lease(ctx)
    if storage.exists(run_record.SUCCESS) and is_complete(ctx):  # prepare found the complete run damaged:
        storage.delete([run_record.SUCCESS])  # not complete until it is finalized anew (under the lease)
    if not storage.exists(run_record.RUN_JSON):
        storage.write_bytes(run_record.RUN_JSON, run_record.new_record(ctx.run_id, ctx.config.public_dict(), output_root=storage.root, model={
            "id": model.model_id, "revision": model.revision, "family": model.family, "is_demo": model.is_demo,
            "note": model.note, "seed_shape": list(model.seed_shape), "scheduler": model.scheduler,
        }, table_digest=ctx.table.digest, warnings=warnings))
    else:
        record = storage.read_bytes(run_record.RUN_JSON)
        if json.loads(record).get("status") != "running":
            storage.write_bytes(run_record.RUN_JSON, run_record.with_status(
                record, "running", settings=ctx.config.public_dict(), table_digest=ctx.table.digest))
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
    return run_record.covers_table(storage.read_bytes(run_record.RUN_JSON), ctx.table.digest)


# -- 2. the concept table ------------------------------------------------------------------------
def load_concepts(ctx: RunContext, concept_ids: list[str] | None = None) -> list[Concept]:
    """The concepts of the run's table (``ctx.table``, read once per run), validated; every bad
    reference URI scheme is reported at once."""
    concepts = ctx.table.select(concept_ids)
    reference_io.check_reference_schemes(ctx.table.source, concepts, policy=input_policy(ctx.config))
    return concepts


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
# -- 3. per concept: invert, plan, generate ---------------------------------------------------
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

    from normguide.diffusion import invert_images, prepare_image, resolved_inverter
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
                                 batch_invariant=inv.batch_invariant, inverter=inv.inverter)
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
        "precision_fallback": fallbacks, "inverter": resolved_inverter(model, inv.inverter),
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
    kept = gated_references(ctx, concept, seeds)
    plan = plan_seeds(
        seeds.inverted[kept], concept_id=concept.concept_id, methods=p.methods,
        num_images=concept.num_images or p.num_images, include_centroid=p.include_centroid,
        pair_paths=p.pair_paths, centroid_paths=p.centroid_paths, include_inversions=p.include_inversions,
        t_values=p.t_values, base_seed=ctx.config.seed,
    )
    if len(kept) < seeds.inverted.shape[0]:  # plan rows name the references they derive from, as the file numbers them
        plan.rows = [_renumbered(r, kept) for r in plan.rows]
    planned = seeds.with_plan(plan)
    check_lease(ctx)
    ctx.storage.write_bytes(seeds_key(concept.concept_id), planned.to_bytes())
    return planned


def gated_references(ctx: RunContext, concept: Concept, seeds: SeedsFile) -> list[int]:
    """The references whose seeds the plan may use: all of them, or, with
    ``inversion.max_round_trip_error`` set, those whose invert -> regenerate round-trip error is
    within it (the others are named in a warning). Fewer than one left fails the concept alone
    (:class:`~normguide.errors.RunFailure`)."""
    bound = ctx.config.inversion.max_round_trip_error
    everyone = list(range(seeds.inverted.shape[0]))
    if bound is None:
        return everyone
    from normguide.diffusion.health import round_trip_gate
    from normguide.errors import RunFailure

    errors = seeds.reconstruction_errors
    if errors is None:  # a seeds file written without the round trip (an older run): nothing to gate on
        _log.warning("concept %r: its seeds file records no round-trip errors; the gate is not applied",
                     concept.concept_id)
        return everyone
    gate = round_trip_gate(errors, bound, needed=1)
    if gate.dropped:
        _log.warning("%s", gate.message(concept.concept_id))
    if not gate.enough:
        raise RunFailure(gate.message(concept.concept_id))
    return gate.kept


def _renumbered(row, kept: list[int]):
    """A plan row planned on the kept references, with its reference indices as the seeds file has them."""
    from dataclasses import replace

    pair = None if row.pair is None else tuple(kept[i] if i >= 0 else i for i in row.pair)
    return replace(row, pair=pair, sources=tuple(kept[i] for i in row.sources))


def generate(ctx: RunContext, concept: Concept, seeds: SeedsFile) -> GeneratedConcept:
    """Generate the concept's missing images, then write its manifest part.

    Images stream out per batch (the write of batch i overlaps the generation of batch i+1);
    images that already exist are not regenerated, only read back to check and hash them (a
    damaged one, empty or undecodable, is named in a warning and generated again).
    """
    if (done := completed_concept(ctx, concept)) is not None:
        return done
    job = pending_images(ctx, concept, seeds)
    # 2. Generate and write them (the model's time measured for run.json's cost: throughput.py)
    if job.todo:
        job.records.update(_generate_and_write(ctx, job.prompt, seeds, job.todo, job.keys, job.meter))
    return write_part(ctx, job)


@dataclass
class PendingImages:
    """A concept's images still to make (``todo``: plan row indices), the records of those that
    exist already (``records``, by plan row index; generated ones are added), and the model time
    spent on it (``meter``): between :func:`pending_images` and :func:`write_part`."""

    concept: Concept
    seeds: SeedsFile
    prompt: str
    keys: list[str]
    todo: list[int]
    records: dict[int, mf.ImageRecord]
    meter: GenerationMeter = field(default_factory=GenerationMeter)


def pending_images(ctx: RunContext, concept: Concept, seeds: SeedsFile) -> PendingImages:
    """Step 1 of :func:`generate`: the prompt checked, and which images are missing; the ones an
    earlier, interrupted run wrote are read back, checked (they decode, and match an earlier
    part's sha256) and hashed; damaged ones are generated again."""
    from normguide.diffusion.prompts import check_prompt_tokens

    cid = concept.concept_id
    prompt = concept.resolved_prompt(ctx.config.prompt_template)
    check_prompt_tokens(ctx.model(), prompt, concept_id=cid, setting=ctx.config.limits.max_prompt_tokens)
    keys = [mf.image_key(cid, r.image_id) for r in seeds.plan_rows]
    present = ctx.storage.existing(keys)
    reused = reusable_images(ctx, cid, [k for k in keys if k in present])
    return PendingImages(concept=concept, seeds=seeds, prompt=prompt, keys=keys,
                         todo=[i for i, k in enumerate(keys) if k not in reused],
                         records={i: reused[k] for i, k in enumerate(keys) if k in reused})


def write_part(ctx: RunContext, job: PendingImages) -> GeneratedConcept:
    """Step 4 of :func:`generate`: the manifest part, written only once every image exists."""
    concept, seeds, rows = job.concept, job.seeds, job.seeds.plan_rows
    cid, model, gen = concept.concept_id, ctx.model(), ctx.config.generation
    part = mf.concept_rows(
        mf.RowContext(run_id=ctx.run_id, concept_id=cid, name=concept.name, prompt=job.prompt,
                      model=model_label(model.model_id, model.is_demo, model.note),
                      model_revision=model.revision, scheduler=model.scheduler,
                      num_inference_steps=gen.num_inference_steps, guidance_scale=gen.guidance_scale,
                      normguide_version=__version__),
        seeds, job.keys, [job.records[i] for i in range(len(rows))],
    )
    check_lease(ctx)
    ctx.storage.write_bytes(mf.part_key(cid), mf.rows_to_parquet(part, concept=concept.definition()))
    z = [r["seed_zscore"] for r in part]
    return GeneratedConcept(concept_id=cid, images=len(rows), generated=len(job.todo), skipped=False,
                            methods=sorted({r.method for r in rows}), mean_seed_zscore=sum(z) / len(z) if z else None,
                            generation=concept_cost(ctx, job.meter) if job.todo else None)


def _encode_and_write(storage, keys: list[str], idx: list[int], images, fallbacks) -> dict[int, mf.ImageRecord]:
    """PNG-encode, hash and write one generated batch (on the writer thread)."""
    blobs = [encode_png(im) for im in images]
    storage.write_many(list(zip(keys, blobs)))
    return {i: image_record(b, im, fb) for i, b, im, fb in zip(idx, blobs, images, fallbacks)}


def _generate_and_write(ctx: RunContext, prompt: str, seeds: SeedsFile, todo: list[int],
                        keys: list[str], meter: GenerationMeter | None = None) -> dict[int, mf.ImageRecord]:
    """Generate the images of plan rows ``todo``; each batch is written on a writer thread while
    the next batch is generated."""
    from normguide.diffusion import generate_images

    gen = ctx.config.generation
    records: dict[int, mf.ImageRecord] = {}
    batches = generate_images(ctx.model(), seeds.generation_seeds[todo], prompt, num_inference_steps=gen.num_inference_steps,
                              guidance_scale=gen.guidance_scale, batch_size=gen.batch_size,
                              batch_invariant=gen.batch_invariant, vae_batch_size=gen.vae_batch_size)
    if meter is not None:
        batches = meter.iterate(batches)
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
        stale = sorted(storage.existing(list(layout.EVAL_KEYS)))
        if stale:
            _log.warning("the evaluation of the earlier manifest (%s) is removed: the run was reopened; it is "
                         "evaluated again when evaluation is on, or with `normguide evaluate`",
                         ", ".join(storage.uri(k) for k in stale))
            storage.delete(stale)
    storage.write_bytes(layout.MANIFEST, manifest)
    storage.write_bytes(run_record.RUN_JSON, run_record.finished_record(
        storage.read_bytes(run_record.RUN_JSON), concepts=concept_ids, images=sum(mf.num_rows(p) for p in parts),
        table_digest=ctx.table.digest))
    storage.write_bytes(run_record.SUCCESS, b"")
    return manifest_uri
