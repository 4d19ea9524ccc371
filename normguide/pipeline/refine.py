"""The refinement stage of a run: SeedSelect on a concept's planned seeds, between planning and
generation (``normguide.diffusion.refine``; docs/refinement.md). Off unless ``refine.enabled``.

Resumable: the refined seeds and each row's record are written into the concept's seeds file
after every batch (``SeedsFile.with_refinement``), so a rerun after Ctrl-C refines only the rows
not done yet, and a finished refinement is reused as it is; generation then draws from the
refined seeds. Refinement's wall-clock seconds are not in the seeds file or the manifest (both
are byte-identical run to run); they go to ``timings/refine-<concept_id>.json``.

Checks before any work (:func:`check_feature_model` from ``prepare``, :func:`check_model` from
``start``): a missing or non-CLIP ``refine.feature_model`` directory, ``auto`` on a model without
a built-in feature model, and a model family whose sampler cannot backpropagate are refused
naming the field.
"""

from __future__ import annotations

import json
import logging
import threading

import torch

from normguide import progress
from normguide.config import RunConfig
from normguide.data.schema import Concept
from normguide.data.seeds import SeedsFile, seeds_key
from normguide.pipeline.context import RunContext, check_lease, read_references

_log = logging.getLogger(__name__)

FIELD = "refine.feature_model"


def timing_key(concept_id: str) -> str:
    from normguide.data.layout import refine_timing_key

    return refine_timing_key(concept_id)


def _feature_kind(config: RunConfig) -> str:
    """'demo' or 'clip' (a directory), for the configured feature model and model."""
    fm = config.refine.feature_model
    if fm == "auto":
        if config.model != "demo":
            raise ValueError(
                f"{FIELD}: model {config.model!r} has no built-in feature model; set {FIELD} to a local CLIP "
                "directory (transformers CLIPModel.save_pretrained with its processor)")
        return "demo"
    return "demo" if fm == "demo" else "clip"


def check_feature_model(config: RunConfig) -> None:
    """Refuse an unusable feature model before any work (reads the directory's config.json only)."""
    if not config.refine.enabled:
        return
    if _feature_kind(config) == "clip":
        from normguide.evaluation.judges import check_clip_directory

        check_clip_directory(config.refine.feature_model, what=FIELD, tokenizer=False)


def check_model(config: RunConfig, model) -> None:
    """Refuse refinement of a model family that cannot backpropagate (``refine.enabled``)."""
    if config.refine.enabled:
        from normguide.diffusion.refine import check_refinable

        check_refinable(model.family, field="refine.enabled")


_FEATURES: dict[tuple[str, str], torch.nn.Module] = {}
_FEATURES_GUARD = threading.Lock()


def feature_model(config: RunConfig, device) -> torch.nn.Module:
    """φ for the run (loaded once per process and device)."""
    kind = _feature_kind(config)
    key = (kind if kind == "demo" else config.refine.feature_model, str(device))
    with _FEATURES_GUARD:
        if key not in _FEATURES:
            if kind == "demo":
                from normguide.demo.features import load_demo_features

                _FEATURES[key] = load_demo_features().to(device)
            else:
                from normguide.diffusion.refine import ClipImageFeatures
                from normguide.evaluation.judges import load_clip_image_model

                clip, processor = load_clip_image_model(config.refine.feature_model, what=FIELD, device=str(device))
                size = processor.crop_size.get("height") if getattr(processor, "crop_size", None) else None
                size = size or processor.size.get("shortest_edge") or processor.size.get("height")
                _FEATURES[key] = ClipImageFeatures(clip, processor.image_mean, processor.image_std, size,
                                                   name=f"CLIP ({config.refine.feature_model})").to(device)
        return _FEATURES[key]


def settings_record(config: RunConfig) -> dict:
    """The refine settings as recorded in the seeds file (what decides the refined values)."""
    d = config.refine.model_dump(mode="json")
    d.pop("gradient_checkpointing", None)
    return d


def refine(ctx: RunContext, concept: Concept, seeds: SeedsFile) -> SeedsFile:
    """Refine the concept's planned seeds (every method, ``batch_size`` seeds at a time, one
    optimiser per batch) and save them in its seeds file after each batch; a seeds file whose
    refinement is complete is returned as it is. No-op when refinement is off."""
    from normguide.diffusion import prepare_image
    from normguide.diffusion.refine import reference_targets, refine_seeds

    cfg = ctx.config.refine
    if not cfg.enabled:
        return seeds
    record = settings_record(ctx.config)
    state = seeds.meta.get("refine")
    if state is not None and state.get("config") != record:
        _log.warning("concept %r: the seeds file was refined with other settings; refining again", concept.concept_id)
        seeds = seeds.without_refinement()
    if seeds.is_refined:
        return seeds
    cid = concept.concept_id
    plan = seeds.plan_rows
    rows: list[dict | None] = list(seeds.refine_rows or [None] * len(plan))
    refined = seeds.refined.clone() if seeds.refined is not None else seeds.planned.clone()
    todo = [i for i, r in enumerate(rows) if r is None]

    # 1. The model, φ and the references' targets (c, μ)
    model = ctx.model()
    check_model(ctx.config, model)
    features = feature_model(ctx.config, model.device)
    references = [prepare_image(im, model.resolution) for im in read_references(ctx, concept)]
    targets = reference_targets(model, references, features)
    prompt = concept.resolved_prompt(ctx.config.prompt_template)

    # 2. Per method (its preset), per batch: refine, then save (the checkpoint of this stage)
    seconds: dict[str, float] = {}
    by_method: dict[str, list[int]] = {}
    for i in todo:
        by_method.setdefault(plan[i].method, []).append(i)
    with progress.stage(cid, "refinement", total=len(todo), unit="seed") as bar:
        for method, idx in by_method.items():
            settings = cfg.settings_for(method)
            for start in range(0, len(idx), cfg.batch_size):
                batch = idx[start : start + cfg.batch_size]
                result = refine_seeds(model, seeds.planned[batch], prompt, features, targets, settings,
                                      batch_size=cfg.batch_size, log=lambda msg: _log.warning("concept %r: %s", cid, msg))
                refined[batch] = result.seeds
                for k, i in enumerate(batch):
                    rows[i] = {
                        "start": method, "preset": cfg.preset_for(method), "iterations": result.iterations[k],
                        "semantic_start": _finite(result.semantic_start[k]), "semantic_end": _finite(result.semantic_end[k]),
                        "appearance_start": _finite(result.appearance_start[k]),
                        "appearance_end": _finite(result.appearance_end[k]), "fallback": bool(result.fallback[k]),
                    }
                    seconds[plan[i].image_id] = round(result.seconds[k], 4)
                seeds = seeds.with_refinement(refined, record, rows)
                check_lease(ctx)  # a run that lost its lease writes no more
                ctx.storage.write_bytes(seeds_key(cid), seeds.to_bytes())
                bar.advance(len(batch))
    _write_timings(ctx, cid, seconds)
    return seeds


def _finite(x: float) -> float | None:
    return float(x) if x == x and abs(x) != float("inf") else None


def _write_timings(ctx: RunContext, concept_id: str, seconds: dict[str, float]) -> None:
    """Seconds per refined image (its batch's time divided among its seeds), merged with the ones
    an interrupted earlier run recorded."""
    key = timing_key(concept_id)
    check_lease(ctx)
    old: dict = {}
    if ctx.storage.exists(key):
        try:
            old = json.loads(ctx.storage.read_bytes(key)).get("seconds", {})
        except ValueError:
            old = {}
    ctx.storage.write_bytes(key, json.dumps({"concept_id": concept_id, "seconds": {**old, **seconds}},
                                            indent=1, sort_keys=True).encode())
