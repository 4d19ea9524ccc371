"""One dataset-generation run as library steps, usable without Prefect.

The flow (``flows/generate_dataset.py``) calls these in order, one task each; a library user can
call them directly. Every step reads its inputs from storage and writes its outputs there, so a
step that is retried, or a run that is resumed, finds what it needs, and steps exchange only
small records.

Layout under the run's output root ``<config.output>/<run_id>/`` (DESIGN.md)::

    run.json                          written at the start, rewritten at the end
    seeds/<concept_id>.safetensors    inverted seeds; after planning also centroids and planned seeds
    images/<concept_id>/<image_id>.png
    manifest/part-<concept_id>.parquet   written only after all the concept's images exist
    manifest.parquet                  all parts, written only after every part exists
    _SUCCESS                          written last

Resume rules: a concept whose part exists and whose images all exist is skipped; a seeds file
that holds a plan is reused; only missing images are generated; a run with ``_SUCCESS`` is a
no-op. Nothing complete is ever rewritten.
"""

from __future__ import annotations

import io
import json
import logging
import math
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any

import torch
from PIL import Image
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from normguide import __version__
from normguide.config import RunConfig
from normguide.data import manifest as mf
from normguide.data.images import ReferenceImageError, decode_reference, encode_png, sha256_hex
from normguide.data.plan import PlannedSeed, plan_seeds
from normguide.data.schema import Concept, ConceptTableError, parse_concept_table
from normguide.data.storage import Storage, check_uri_scheme, read_bytes
from normguide.diffusion import LoadedModel, generate_images, get_pipeline, invert_images, prepare_image
from normguide.geometry import ChiPrior

log = logging.getLogger("normguide")

SEEDS_META_KEY = "normguide"
DEMO_NOTE = "demo model with random weights: its images are noise, not a real dataset"


# -- run-level ------------------------------------------------------------------------------
def output_root(config: RunConfig) -> str:
    """``<output>/<run_id>`` as a URI or absolute path."""
    base = config.output.rstrip("/")
    return f"{base}/{config.resolved_run_id()}"


def open_output(config: RunConfig) -> Storage:
    return Storage.open(output_root(config), storage=config.storage, retry_seconds=config.storage.retry_seconds)


def load_model(config: RunConfig) -> LoadedModel:
    """The run's pipeline (cached per process, so every step shares one)."""
    return get_pipeline(config.model, device=config.device, dtype=config.dtype)


def model_label(model: LoadedModel) -> str:
    """The manifest's ``model`` value; the demo says plainly what it is."""
    return f"{model.model_id} ({DEMO_NOTE})" if model.is_demo else model.model_id


def _versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {
        "normguide": __version__,
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
    }


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _run_json(config: RunConfig, model: LoadedModel) -> bytes:
    doc = {
        "run_id": config.resolved_run_id(),
        "status": "running",
        "started_at": _now().isoformat(),
        "finished_at": None,
        "output_root": output_root(config),
        "model": {
            "id": model.model_id,
            "revision": model.revision,
            "family": model.family,
            "is_demo": model.is_demo,
            "note": DEMO_NOTE if model.is_demo else None,
            "seed_shape": list(model.seed_shape),
            "scheduler": model.scheduler,
        },
        "versions": _versions(),
        "concepts": None,
        "images": None,
        "config": config.public_dict(),
    }
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def prepare_run(config: RunConfig) -> dict[str, Any]:
    """Check the output is writable and the model loads (before any GPU work); start run.json.

    Returns ``{"run_id", "output_root", "complete", "is_demo", "model"}``; ``complete`` is true
    when the run already has ``_SUCCESS`` (a rerun is then a no-op).
    """
    storage = open_output(config)
    storage.check_writable()
    if storage.exists("run.json"):
        _check_same_content(config, json.loads(storage.read_bytes("run.json")), storage.uri("run.json"))
    model = load_model(config)
    complete = storage.exists("_SUCCESS")
    if not complete and not storage.exists("run.json"):
        storage.write_bytes("run.json", _run_json(config, model))
    return {
        "run_id": config.resolved_run_id(),
        "output_root": storage.root,
        "complete": complete,
        "is_demo": model.is_demo,
        "model": model_label(model),
    }


def _check_same_content(config: RunConfig, doc: dict[str, Any], where: str) -> None:
    """A run id names one dataset: resuming it with settings that change the content would mix
    two datasets under one manifest, so that is refused, naming the fields that differ."""
    try:
        before = RunConfig.model_validate(doc["config"]).content_dict()
    except Exception:  # noqa: BLE001 - an unreadable record is reported as such
        raise ValueError(f"{where} is not a normguide run record; choose another output root or run_id") from None
    now = config.content_dict()
    diff = sorted(_flat_diff(before, now))
    if diff:
        raise ValueError(
            f"run {config.resolved_run_id()!r} at {where} was started with different settings ({', '.join(diff)}); "
            "rerun with the original configuration to resume it, or choose another run_id"
        )


def _flat_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _flat_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def load_concepts(config: RunConfig, concept_ids: list[str] | None = None) -> list[Concept]:
    """Read and validate the concept table; every bad reference URI scheme is reported at once."""
    check_uri_scheme(config.concepts, field="concepts")
    table = parse_concept_table(read_bytes(config.concepts, storage=config.storage), source=config.concepts)
    concepts = table.select(concept_ids)
    problems = []
    for c in concepts:
        for uri in c.reference_uris:
            try:
                check_uri_scheme(uri, field=f"reference_uris of concept {c.concept_id!r}")
            except ValueError as exc:
                problems.append(str(exc))
    if problems:
        raise ConceptTableError(config.concepts, problems)
    return concepts


def missing_parts(config: RunConfig, concept_ids: list[str]) -> list[str]:
    """Concept ids whose manifest part does not exist yet."""
    storage = open_output(config)
    have = storage.existing([mf.part_key(c) for c in concept_ids])
    return [c for c in concept_ids if mf.part_key(c) not in have]


def run_complete(config: RunConfig) -> bool:
    """True when the run already has ``_SUCCESS`` (cheap: one existence check, no model)."""
    return open_output(config).exists("_SUCCESS")


def finalize_run(config: RunConfig, concept_ids: list[str]) -> str:
    """Consolidate the parts into ``manifest.parquet``, finish run.json, write ``_SUCCESS`` last.

    A run that already has ``_SUCCESS`` is left as it is. Raises ``RuntimeError`` naming the
    concepts whose part is missing (nothing is written then). Needs no model: the model's
    record comes from the run.json that :func:`prepare_run` wrote.
    """
    storage = open_output(config)
    manifest_uri = storage.uri("manifest.parquet")
    if storage.exists("_SUCCESS"):
        return manifest_uri
    missing = missing_parts(config, concept_ids)
    if missing:
        raise RuntimeError(f"cannot finalize run {config.resolved_run_id()!r}: manifest parts missing for concepts {missing}")
    if not storage.exists("run.json"):
        raise RuntimeError(f"cannot finalize run {config.resolved_run_id()!r}: {storage.uri('run.json')!r} is missing")
    parts = [storage.read_bytes(mf.part_key(c)) for c in concept_ids]
    storage.write_bytes("manifest.parquet", mf.consolidate(parts))
    doc = json.loads(storage.read_bytes("run.json"))
    doc.update(status="complete", finished_at=_now().isoformat(), concepts=list(concept_ids),
               images=sum(mf.num_rows(p) for p in parts))
    storage.write_bytes("run.json", json.dumps(doc, indent=2, sort_keys=True).encode())
    storage.write_bytes("_SUCCESS", b"")
    return manifest_uri


# -- concept-level --------------------------------------------------------------------------
def complete_part_rows(storage: Storage, concept_id: str) -> int | None:
    """Row count of the concept's manifest part when it exists and every image it lists exists,
    else None (the concept is then not complete)."""
    if not storage.exists(mf.part_key(concept_id)):
        return None
    table = mf.parquet_to_table(storage.read_bytes(mf.part_key(concept_id)))
    keys = [mf.image_key(concept_id, i) for i in table.column("image_id").to_pylist()]
    return table.num_rows if len(storage.existing(keys)) == len(keys) else None


def _load_seeds(storage: Storage, concept_id: str) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    key = mf.seeds_key(concept_id)
    if not storage.exists(key):
        return None
    data = storage.read_bytes(key)
    # safetensors layout: 8-byte little-endian header length, then the JSON header (with metadata)
    n = int.from_bytes(data[:8], "little")
    header_meta = json.loads(data[8 : 8 + n]).get("__metadata__", {})
    return st_load(data), json.loads(header_meta.get(SEEDS_META_KEY, "{}"))


def _save_seeds(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    """safetensors bytes, byte-identical for identical content.

    safetensors keeps header metadata in a hash map whose order varies between calls, so all
    of normguide's metadata goes into one key as canonical JSON.
    """
    return st_save(tensors, metadata={SEEDS_META_KEY: json.dumps(meta, sort_keys=True)})


def invert_references(config: RunConfig, concept: Concept) -> dict[str, Any]:
    """Read the concept's reference images, invert them to seeds, save ``seeds/<id>.safetensors``.

    Skipped when the seeds file exists (inversion is deterministic; a resumed run reuses it).
    """
    storage = open_output(config)
    cid = concept.concept_id
    if (found := _load_seeds(storage, cid)) is not None:
        meta = found[1]
        return {"concept_id": cid, "seeds_uri": storage.uri(mf.seeds_key(cid)), "num_seeds": meta["num_seeds"], "reused": True}
    # 1. Read and check every reference (errors name the concept and the file)
    model = load_model(config)
    images, problems = [], []
    for uri in concept.reference_uris:
        try:
            data = read_bytes(uri, storage=config.storage)
            images.append(prepare_image(decode_reference(data, uri=uri, concept_id=cid), model.resolution))
        except FileNotFoundError as exc:
            where = f" ({exc.strerror})" if uri.startswith("s3://") and exc.strerror else ""  # endpoint, bucket
            problems.append(f"concept {cid!r}: reference image {uri!r} does not exist{where}")
        except ReferenceImageError as exc:
            problems.append(str(exc))
    if problems:  # every bad reference of the concept at once, so one fix-up round suffices
        raise ReferenceImageError("; ".join(problems))
    # 2. DDIM inversion
    inv = config.inversion
    result = invert_images(
        model, images, concept.resolved_prompt(config.prompt_template),
        num_inference_steps=inv.num_inference_steps, guidance_scale=inv.guidance_scale,
        batch_size=inv.batch_size, reconstruction=inv.reconstruction,
    )
    # 3. Save the seeds with their metadata
    meta = {
        "concept_id": cid,
        "num_seeds": len(images),
        "reference_uris": list(concept.reference_uris),
        "prompt": concept.resolved_prompt(config.prompt_template),
        "reconstruction_error": result.reconstruction_error,
        "model": model.model_id,
        "model_revision": model.revision,
        "inversion_steps": inv.num_inference_steps,
        "inversion_guidance": inv.guidance_scale,
        "seed_shape": list(model.seed_shape),
    }
    storage.write_bytes(mf.seeds_key(cid), _save_seeds({"inverted": result.seeds.contiguous()}, meta))
    return {"concept_id": cid, "seeds_uri": storage.uri(mf.seeds_key(cid)), "num_seeds": len(images), "reused": False}


def plan_concept(config: RunConfig, concept: Concept) -> dict[str, Any]:
    """Plan the concept's seeds (all methods) and add them to its seeds file."""
    storage = open_output(config)
    cid = concept.concept_id
    found = _load_seeds(storage, cid)
    if found is None:
        raise RuntimeError(f"concept {cid!r}: no seeds file {storage.uri(mf.seeds_key(cid))!r}; run the inversion first")
    tensors, meta = found
    if "plan" in meta:
        return {"concept_id": cid, "planned": len(meta["plan"]), "reused": True}
    p = config.plan
    plan = plan_seeds(
        tensors["inverted"], concept_id=cid, methods=p.methods,
        num_images=concept.num_images or p.num_images,
        include_centroid=p.include_centroid, pair_paths=p.pair_paths, centroid_paths=p.centroid_paths,
        include_inversions=p.include_inversions, t_values=p.t_values, base_seed=config.seed,
    )
    out = {"inverted": tensors["inverted"], "planned": plan.seeds.contiguous()}
    out.update({f"centroid.{m}": c.contiguous() for m, c in plan.centroids.items()})
    meta = dict(meta, plan=[r.to_dict() for r in plan.rows])
    storage.write_bytes(mf.seeds_key(cid), _save_seeds(out, meta))
    return {"concept_id": cid, "planned": len(plan.rows), "reused": False}


def generate_concept(config: RunConfig, concept: Concept) -> dict[str, Any]:
    """Generate the concept's missing images, then write its manifest part.

    Images stream out per batch (the write of batch i overlaps the generation of batch i+1);
    images that already exist are not regenerated, only read back to hash them.
    """
    storage = open_output(config)
    cid = concept.concept_id
    if (n := complete_part_rows(storage, cid)) is not None:  # read the part once
        return {"concept_id": cid, "images": n, "generated": 0, "skipped": True}
    found = _load_seeds(storage, cid)
    if found is None or "plan" not in found[1]:
        raise RuntimeError(f"concept {cid!r}: seeds file has no plan; run plan_seeds first")
    tensors, meta = found
    rows = [PlannedSeed.from_dict(r) for r in meta["plan"]]
    planned = tensors["planned"]
    model = load_model(config)
    gen = config.generation
    prompt = concept.resolved_prompt(config.prompt_template)

    # 1. Which images are missing
    keys = [mf.image_key(cid, r.image_id) for r in rows]
    present = storage.existing(keys)
    todo = [i for i, k in enumerate(keys) if k not in present]
    records: dict[int, dict[str, Any]] = {}

    # 2. Generate the missing ones, writing each batch while the next is generated
    if todo:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="normguide-write") as writer:
            pending = None
            batches = generate_images(
                model, planned[todo], prompt, num_inference_steps=gen.num_inference_steps,
                guidance_scale=gen.guidance_scale, batch_size=gen.batch_size,
            )
            pos = 0
            for images in batches:
                idx = todo[pos : pos + len(images)]
                pos += len(images)
                blobs = [encode_png(im) for im in images]
                for i, im, blob in zip(idx, images, blobs):
                    records[i] = {"sha256": sha256_hex(blob), "width": im.width, "height": im.height, "created_at": _now()}
                if pending is not None:
                    pending.result()
                pending = writer.submit(storage.write_many, [(keys[i], b) for i, b in zip(idx, blobs)])
            if pending is not None:
                pending.result()

    # 3. Images written by an earlier, interrupted run: read back to hash
    for i, k in enumerate(keys):
        if i not in records:
            blob = storage.read_bytes(k)
            with Image.open(io.BytesIO(blob)) as im:
                w, h = im.size
            records[i] = {"sha256": sha256_hex(blob), "width": w, "height": h, "created_at": _now()}

    # 4. The manifest part, written only now that every image exists
    refs = meta["reference_uris"]
    rec_err = meta["reconstruction_error"]
    prior = ChiPrior(model.d)
    flat = planned.reshape(len(rows), -1).to(torch.float64)
    norms = flat.norm(dim=-1)
    z = prior.zscore(flat)
    logp = prior.log_prob(norms)
    part = []
    for i, r in enumerate(rows):
        part.append({
            "run_id": config.resolved_run_id(), "concept_id": cid, "name": concept.name, "prompt": prompt,
            "image_uri": storage.uri(keys[i]), "image_id": r.image_id, **records[i],
            "method": r.method, "kind": r.kind,
            "source_refs": [refs[s] for s in r.sources],
            "pair": list(r.pair) if r.pair is not None else None, "t": r.t,
            "seed_norm": float(norms[i]), "seed_zscore": float(z[i]), "seed_log_prob": float(logp[i]),
            "model": model_label(model), "model_revision": model.revision, "scheduler": model.scheduler,
            "num_inference_steps": gen.num_inference_steps, "guidance_scale": gen.guidance_scale,
            "inversion_steps": int(meta["inversion_steps"]), "inversion_guidance": float(meta["inversion_guidance"]),
            "reconstruction_error": _worst(rec_err, r.sources),
            "seed": r.seed, "normguide_version": __version__, "synthetic": True,
        })
    storage.write_bytes(mf.part_key(cid), mf.rows_to_parquet(part))
    return {
        "concept_id": cid, "images": len(rows), "generated": len(todo), "skipped": False,
        "mean_seed_zscore": float(z.mean()) if len(rows) else math.nan,
        "methods": sorted({r.method for r in rows}),
    }


def _worst(errors: list[float] | None, sources: tuple[int, ...]) -> float | None:
    """Reconstruction error of a planned seed: the worst of the inversions it derives from."""
    if not errors or not sources:
        return None
    return max(errors[s] for s in sources)

