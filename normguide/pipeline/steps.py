"""The steps of one dataset run, top to bottom. Each takes a :class:`RunContext` and typed inputs
and returns a typed record (``results.py``); the drivers (``local.py``, and the Prefect flows in
``flows/``) only call them in order.

Layout under the run root (DESIGN.md)::

    run.json                          written at the start, rewritten at the end
    seeds/<concept_id>.safetensors    inverted seeds; after planning also centroids and planned seeds
    images/<concept_id>/<image_id>.png
    manifest/part-<concept_id>.parquet   written only after all the concept's images exist
    manifest.parquet                  all parts, written only after every part exists
    _SUCCESS                          written last

Resume rules: a concept whose part exists and whose images all exist is complete (nothing of it
is read or loaded again); a seeds file with a plan is reused; only missing images are generated;
a run with ``_SUCCESS`` is a no-op that loads no model. Nothing complete is ever rewritten.
"""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from normguide import __version__
from normguide.data import manifest as mf
from normguide.data import run_record
from normguide.data.images import (
    ReferenceImageError,
    decode_reference,
    encode_png,
    sha256_hex,
)
from normguide.data.plan import plan_seeds
from normguide.data.schema import Concept, ConceptTableError, parse_concept_table
from normguide.data.seeds import SeedsFile, seeds_key
from normguide.data.storage import check_uri_scheme
from normguide.pipeline.context import RunContext
from normguide.pipeline.results import GeneratedConcept, PreparedRun, SeedsRecord


# -- 1. prepare --------------------------------------------------------------------------------
def model_label(model_id: str, is_demo: bool, note: str | None) -> str:
    """The manifest's ``model`` value: the id, and for the built-in demos what they are."""
    return f"{model_id} ({note})" if is_demo and note else model_id


def prepare(ctx: RunContext) -> PreparedRun:
    """Check the output is writable, refuse a resumed run with other settings, and start
    run.json (loading the model, so a bad model fails before any concept). A complete run
    (``_SUCCESS``) returns at once without loading the model."""
    storage = ctx.storage
    storage.check_writable()
    record = storage.read_bytes(run_record.RUN_JSON) if storage.exists(run_record.RUN_JSON) else None
    if record is not None:
        run_record.check_same_content(ctx.config, record, storage.uri(run_record.RUN_JSON))
    if record is not None and storage.exists(run_record.SUCCESS):
        m = json.loads(record).get("model") or {}
        is_demo = bool(m.get("is_demo"))
        return PreparedRun(run_id=ctx.run_id, output_root=storage.root, complete=True, is_demo=is_demo,
                           model=model_label(str(m.get("id")), is_demo, m.get("note")), model_note=m.get("note"))
    model = ctx.model()
    if record is None:
        storage.write_bytes(run_record.RUN_JSON, run_record.new_record(ctx.config, output_root=storage.root, model={
            "id": model.model_id, "revision": model.revision, "family": model.family, "is_demo": model.is_demo,
            "note": model.note, "seed_shape": list(model.seed_shape), "scheduler": model.scheduler,
        }))
    return PreparedRun(run_id=ctx.run_id, output_root=storage.root, complete=False,
                       model=model_label(model.model_id, model.is_demo, model.note),
                       is_demo=model.is_demo, model_note=model.note)


def is_complete(ctx: RunContext) -> bool:
    """Whether the run has ``_SUCCESS`` (one existence check, no model)."""
    return ctx.storage.exists(run_record.SUCCESS)


# -- 2. the concept table ------------------------------------------------------------------------
def load_concepts(ctx: RunContext, concept_ids: list[str] | None = None) -> list[Concept]:
    """Read and validate the concept table; every bad reference URI scheme is reported at once."""
    source = ctx.config.concepts
    check_uri_scheme(source, field="concepts")
    concepts = parse_concept_table(ctx.read_input(source), source=source).select(concept_ids)
    problems = []
    for c in concepts:
        for uri in c.reference_uris:
            try:
                check_uri_scheme(uri, field=f"reference_uris of concept {c.concept_id!r}")
            except ValueError as exc:
                problems.append(str(exc))
    if problems:
        raise ConceptTableError(source, problems)
    return concepts


# -- 3. per concept ------------------------------------------------------------------------------
def completed_concept(ctx: RunContext, concept_id: str) -> GeneratedConcept | None:
    """The concept's record when its manifest part and every image it lists exist, else None."""
    storage = ctx.storage
    if not storage.exists(mf.part_key(concept_id)):
        return None
    table = mf.parquet_to_table(storage.read_bytes(mf.part_key(concept_id)))
    keys = [mf.image_key(concept_id, i) for i in table.column("image_id").to_pylist()]
    if len(storage.existing(keys)) != len(keys):
        return None
    z = [v for v in table.column("seed_zscore").to_pylist() if v is not None]
    return GeneratedConcept(concept_id=concept_id, images=table.num_rows, generated=0, skipped=True,
                            methods=sorted(set(table.column("method").to_pylist())),
                            mean_seed_zscore=sum(z) / len(z) if z else None)


def missing_parts(ctx: RunContext, concept_ids: list[str]) -> list[str]:
    """Concept ids whose manifest part does not exist yet (one listing, not one request each)."""
    have = ctx.storage.existing([mf.part_key(c) for c in concept_ids])
    return [c for c in concept_ids if mf.part_key(c) not in have]


def read_seeds(ctx: RunContext, concept_id: str) -> SeedsFile | None:
    key = seeds_key(concept_id)
    if not ctx.storage.exists(key):
        return None
    return SeedsFile.from_bytes(ctx.storage.read_bytes(key), where=ctx.storage.uri(key))


def seeds_record(ctx: RunContext, seeds: SeedsFile) -> SeedsRecord:
    return SeedsRecord(concept_id=seeds.concept_id, seeds_uri=ctx.storage.uri(seeds_key(seeds.concept_id)),
                       num_seeds=seeds.num_seeds, planned=len(seeds.meta.get("plan", [])))


def invert(ctx: RunContext, concept: Concept) -> SeedsFile:
    """Read the concept's reference images, invert them to seeds, save the seeds file.

    An existing seeds file is returned as it is (inversion is deterministic; a resumed run
    reuses it).
    """
    from normguide.diffusion import invert_images, prepare_image

    cid = concept.concept_id
    if (found := read_seeds(ctx, cid)) is not None:
        return found
    # 1. Read and check every reference (errors name the concept and the file)
    model = ctx.model()
    images, problems = [], []
    for uri in concept.reference_uris:
        try:
            data = ctx.read_input(uri)
            images.append(prepare_image(decode_reference(data, uri=uri, concept_id=cid), model.resolution))
        except FileNotFoundError as exc:
            where = f" ({exc.strerror})" if uri.startswith("s3://") and exc.strerror else ""  # endpoint, bucket
            problems.append(f"concept {cid!r}: reference image {uri!r} does not exist{where}")
        except ReferenceImageError as exc:
            problems.append(str(exc))
    if problems:  # every bad reference of the concept at once, so one fix-up round suffices
        raise ReferenceImageError("; ".join(problems))
    # 2. DDIM inversion
    inv = ctx.config.inversion
    prompt = concept.resolved_prompt(ctx.config.prompt_template)
    result = invert_images(model, images, prompt, num_inference_steps=inv.num_inference_steps,
                           guidance_scale=inv.guidance_scale, batch_size=inv.batch_size,
                           reconstruction=inv.reconstruction)
    # 3. Save the seeds (the expensive step's checkpoint)
    seeds = SeedsFile(inverted=result.seeds.contiguous(), meta={
        "concept_id": cid, "num_seeds": len(images), "reference_uris": list(concept.reference_uris),
        "prompt": prompt, "reconstruction_error": result.reconstruction_error, "model": model.model_id,
        "model_revision": model.revision, "inversion_steps": inv.num_inference_steps,
        "inversion_guidance": inv.guidance_scale, "seed_shape": list(model.seed_shape),
    })
    ctx.storage.write_bytes(seeds_key(cid), seeds.to_bytes())
    return seeds


def plan(ctx: RunContext, concept: Concept, seeds: SeedsFile) -> SeedsFile:
    """Plan the concept's seeds for every configured method and save them in its seeds file
    (a file that already holds a plan is returned as it is)."""
    if seeds.has_plan:
        return seeds
    p = ctx.config.plan
    planned = seeds.with_plan(plan_seeds(
        seeds.inverted, concept_id=concept.concept_id, methods=p.methods,
        num_images=concept.num_images or p.num_images, include_centroid=p.include_centroid,
        pair_paths=p.pair_paths, centroid_paths=p.centroid_paths, include_inversions=p.include_inversions,
        t_values=p.t_values, base_seed=ctx.config.seed,
    ))
    ctx.storage.write_bytes(seeds_key(concept.concept_id), planned.to_bytes())
    return planned


def generate(ctx: RunContext, concept: Concept, seeds: SeedsFile) -> GeneratedConcept:
    """Generate the concept's missing images, then write its manifest part.

    Images stream out per batch (the write of batch i overlaps the generation of batch i+1);
    images that already exist are not regenerated, only read back to hash them.
    """
    cid = concept.concept_id
    if (done := completed_concept(ctx, cid)) is not None:
        return done
    rows = seeds.plan_rows
    storage = ctx.storage
    model = ctx.model()
    prompt = concept.resolved_prompt(ctx.config.prompt_template)
    gen = ctx.config.generation

    # 1. Which images are missing
    keys = [mf.image_key(cid, r.image_id) for r in rows]
    present = storage.existing(keys)
    todo = [i for i, k in enumerate(keys) if k not in present]

    # 2. Generate and write them; 3. hash the ones an earlier, interrupted run wrote
    records = _generate_and_write(ctx, prompt, seeds, todo, keys) if todo else {}
    for i, k in enumerate(keys):
        if i not in records:
            records[i] = _image_record(storage.read_bytes(k))

    # 4. The manifest part, written only now that every image exists
    part = mf.concept_rows(
        mf.RowContext(run_id=ctx.run_id, concept_id=cid, name=concept.name, prompt=prompt,
                      model=model_label(model.model_id, model.is_demo, model.note),
                      model_revision=model.revision, scheduler=model.scheduler,
                      num_inference_steps=gen.num_inference_steps, guidance_scale=gen.guidance_scale,
                      normguide_version=__version__),
        seeds, [storage.uri(k) for k in keys], [records[i] for i in range(len(rows))],
    )
    storage.write_bytes(mf.part_key(cid), mf.rows_to_parquet(part))
    z = [r["seed_zscore"] for r in part]
    return GeneratedConcept(concept_id=cid, images=len(rows), generated=len(todo), skipped=False,
                            methods=sorted({r.method for r in rows}), mean_seed_zscore=sum(z) / len(z) if z else None)


def _image_record(blob: bytes, image: Image.Image | None = None) -> mf.ImageRecord:
    if image is None:
        with Image.open(io.BytesIO(blob)) as im:
            size = im.size
    else:
        size = image.size
    return mf.ImageRecord(sha256=sha256_hex(blob), width=size[0], height=size[1], created_at=run_record.now())


def _generate_and_write(ctx: RunContext, prompt: str, seeds: SeedsFile, todo: list[int],
                        keys: list[str]) -> dict[int, mf.ImageRecord]:
    """Generate the images of plan rows ``todo``; each batch is written on a writer thread while
    the next batch is generated."""
    from normguide.diffusion import generate_images

    gen = ctx.config.generation
    records: dict[int, mf.ImageRecord] = {}
    batches = generate_images(ctx.model(), seeds.planned[todo], prompt, num_inference_steps=gen.num_inference_steps,
                              guidance_scale=gen.guidance_scale, batch_size=gen.batch_size)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="normguide-write") as writer:
        pending = None
        pos = 0
        for images in batches:
            idx = todo[pos : pos + len(images)]
            pos += len(images)
            blobs = [encode_png(im) for im in images]
            records.update({i: _image_record(b, im) for i, b, im in zip(idx, blobs, images)})
            if pending is not None:
                pending.result()
            pending = writer.submit(ctx.storage.write_many, [(keys[i], b) for i, b in zip(idx, blobs)])
        if pending is not None:
            pending.result()
    return records


# -- 4. finalize -------------------------------------------------------------------------------
def finalize(ctx: RunContext, concept_ids: list[str]) -> str:
    """Consolidate the parts into ``manifest.parquet``, finish run.json, write ``_SUCCESS`` last.

    A run that already has ``_SUCCESS`` is left as it is. Raises ``RuntimeError`` naming the
    concepts whose part is missing (nothing is written then). Needs no model.
    """
    storage = ctx.storage
    manifest_uri = storage.uri("manifest.parquet")
    if storage.exists(run_record.SUCCESS):
        return manifest_uri
    missing = missing_parts(ctx, concept_ids)
    if missing:
        raise RuntimeError(f"cannot finalize run {ctx.run_id!r}: manifest parts missing for concepts {missing}")
    if not storage.exists(run_record.RUN_JSON):
        raise RuntimeError(f"cannot finalize run {ctx.run_id!r}: {storage.uri(run_record.RUN_JSON)!r} is missing")
    parts = [storage.read_bytes(mf.part_key(c)) for c in concept_ids]
    storage.write_bytes("manifest.parquet", mf.consolidate(parts))
    storage.write_bytes(run_record.RUN_JSON, run_record.finished_record(
        storage.read_bytes(run_record.RUN_JSON), concepts=concept_ids, images=sum(mf.num_rows(p) for p in parts)))
    storage.write_bytes(run_record.SUCCESS, b"")
    return manifest_uri


# -- 5. evaluate -------------------------------------------------------------------------------
EVAL_METRICS, EVAL_REPORT, EVAL_PLOT = "eval/metrics.parquet", "eval/report.md", "eval/metrics.png"


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
        return {cid: [_decode(ctx.read_input(u), u) for u in c.reference_uris] for cid, c in found.items()}
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
    if not storage.exists("manifest.parquet"):
        raise ValueError(f"run at {storage.root} has no manifest.parquet: it is missing or not complete "
                         "(finish it with `normguide run` first)")
    judge = judge or evaluation_judge(ctx)
    if judge is None:
        raise ValueError("no judge to evaluate with: this model has no built-in one; set evaluation.clip_model "
                         "to a local CLIP directory (or evaluation.judge)")
    # 2. The manifest, its images, and each concept's references
    manifest = pd.read_parquet(io.BytesIO(storage.read_bytes("manifest.parquet")))
    images = [_decode(storage.read_bytes(key), storage.uri(key))
              for key in (mf.image_key(c, i) for c, i in zip(manifest.concept_id, manifest.image_id))]
    names = dict(zip(manifest.concept_id, manifest.name))
    references = {}
    for cid in names:
        seeds = read_seeds(ctx, cid)
        if seeds is None:
            raise ValueError(f"concept {cid!r}: no seeds file {storage.uri(seeds_key(cid))}, so its references are unknown")
        references[cid] = [_decode(ctx.read_input(u), u) for u in seeds.meta["reference_uris"]]
    # 3. Metrics, report and plot
    metrics = ev.evaluate(manifest, images, references, judge, _real_test_images(ctx, judge, names), names)
    judge_name = getattr(judge, "name", type(judge).__name__)
    buf = io.BytesIO()
    metrics.to_parquet(buf, index=False)
    storage.write_bytes(EVAL_METRICS, buf.getvalue())
    storage.write_bytes(EVAL_REPORT, ev.report_markdown(metrics, run_id=ctx.run_id, judge_name=judge_name).encode())
    storage.write_bytes(EVAL_PLOT, ev.plot_metrics(metrics))
    overall = metrics[metrics.concept_id == ev.ALL].set_index("method")
    headline = ["recognisability", "coverage", "tstr_accuracy", "vendi"]
    return EvaluationRecord(
        metrics_uri=storage.uri(EVAL_METRICS), report_uri=storage.uri(EVAL_REPORT), judge=judge_name,
        per_method={m: {c: (None if pd.isna(v) else float(v)) for c, v in row.items() if c in headline}
                    for m, row in overall.iterrows()},
    )
