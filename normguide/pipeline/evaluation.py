"""Step 6 of a run: evaluate the finished dataset (``eval/`` under the run's root).

Which judge the settings ask for, whether the run is evaluated at all, and :func:`evaluate`,
which scores the images per concept and method with ``normguide.evaluation`` (streamed: read
and decoded a chunk at a time, so memory does not grow with the number of images) and writes
``eval/metrics.parquet``, ``eval/report.md`` and ``eval/metrics.png``, and with
``evaluation.labelled_table`` the long-tail protocol's ``eval/longtail.parquet``
(``longtail.py``). Needs a finalized run; never loads the generation model.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence

from PIL import Image

from normguide.data import layout, run_record
from normguide.data import manifest as mf
from normguide.data.images import decode_reference, sha256_hex
from normguide.data.parquet_io import read_frame
from normguide.data.schema import parse_concept_table
from normguide.data.seeds import seeds_key
from normguide.data.verify import DamagedRunError, check_images
from normguide.evaluation.stream import LazyImages
from normguide.pipeline.context import RunContext, check_lease
from normguide.pipeline.resume import read_seeds

EVAL_METRICS, EVAL_REPORT, EVAL_PLOT = layout.EVAL_METRICS, layout.EVAL_REPORT, layout.EVAL_PLOT
EVAL_LONGTAIL = layout.EVAL_LONGTAIL


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


def _run_images(storage, manifest, keys: list[str]) -> LazyImages:
    """The manifest's images (``keys``, row-aligned), each read and decoded when evaluation
    reads it (never all in memory). First, with the manifest's sha256 column, every image is
    read once and hashed (one at a time): an altered image stops the evaluation before any
    scoring, with :class:`DamagedRunError` naming every altered one. An image altered between
    that check and its reading is named the same way."""
    want = dict(zip(keys, manifest.sha256)) if "sha256" in manifest else None

    def altered() -> dict[str, str]:
        return {k: "sha256 differs from the manifest's" for k in keys
                if sha256_hex(storage.read_bytes(k)) != want[k]}

    if want is not None and (bad := altered()):
        raise DamagedRunError(storage.root, bad, doing="evaluate")

    def load(key: str) -> Image.Image:
        data = storage.read_bytes(key)
        if want is not None and sha256_hex(data) != want[key]:
            raise DamagedRunError(storage.root, altered(), doing="evaluate")
        return _decode(data, storage.uri(key))

    return LazyImages(keys, load)


def _lazy_references(ctx: RunContext, concept_id: str, uris: list[str]) -> LazyImages:
    """A concept's reference images, each read and decoded when evaluation reads it."""
    return LazyImages(uris, lambda u: decode_reference(ctx.read_input(u), uri=u, concept_id=concept_id))


def _real_test_images(ctx: RunContext, judge, concepts: dict[str, str]) -> dict[str, Sequence[Image.Image]] | None:
    """Held-out real images per concept: the configured table (read and decoded as evaluation
    reads them), else the demo's own test digits."""
    source = ctx.config.evaluation.real_test
    if source:
        from normguide.data.input_policy import InputPolicy, check_input_allowed
        from normguide.data.schema import ConceptTableError

        check_input_allowed(source, field="evaluation.real_test")  # the deployment's bound, unread
        table = parse_concept_table(ctx.read_input(source), source=source)
        found = {c.concept_id: c for c in table.concepts if c.concept_id in concepts}
        # its images obey the input policy of a concept table (unread when refused, one message)
        refused = InputPolicy.for_table(source, ctx.config.storage.allowed_input_roots).problems(list(found.values()))
        if refused:
            raise ConceptTableError(source, refused)
        return {cid: _lazy_references(ctx, cid, list(c.reference_uris)) for cid, c in found.items()}
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
    from normguide.pipeline import longtail
    from normguide.pipeline.results import EvaluationRecord

    storage = ctx.storage
    cfg = ctx.config.evaluation
    # 1. Check inputs: a finalized run with its images, the labelled table (before any model), a judge
    if not storage.exists(layout.MANIFEST):
        raise ValueError(f"run at {storage.root} has no manifest.parquet: it is missing or not complete "
                         "(finish it with `normguide run` first)")
    manifest = read_frame(storage.read_bytes(layout.MANIFEST))
    rows = list(zip(manifest.concept_id, manifest.image_id))
    check_images(storage, rows, doing="evaluate")  # missing or empty images named (listings only)
    if cfg.labelled_table:
        longtail.check_evaluation_inputs(ctx.config, ctx.read_input, list(dict.fromkeys(manifest.concept_id)))
    judge = judge or evaluation_judge(ctx)
    if judge is None:
        raise ValueError("no judge to evaluate with: this model has no built-in one; set evaluation.clip_model "
                         "to a local CLIP directory (or evaluation.judge)")
    # 2. The manifest's images and each concept's references, read and decoded a chunk at a time
    #    while they are scored (never all in memory; an altered image is named with every other)
    keys = [mf.image_key(c, i) for c, i in rows]
    images = _run_images(storage, manifest, keys)
    names = dict(zip(manifest.concept_id, manifest.name))
    references = {}
    for cid in names:
        seeds = read_seeds(ctx, cid)
        if seeds is None:
            raise ValueError(f"concept {cid!r}: no seeds file {storage.uri(seeds_key(cid))}, so its references are unknown")
        references[cid] = _lazy_references(ctx, cid, seeds.meta["reference_uris"])
    # 3. Metrics, report and plot
    metrics = ev.evaluate(manifest, images, references, judge, _real_test_images(ctx, judge, names), names,
                          include_references=True)  # the baseline row: the references themselves
    judge_name = getattr(judge, "name", type(judge).__name__)
    report = ev.report_markdown(metrics, run_id=ctx.run_id, judge_name=judge_name)
    # 4. The long-tail protocol on the user's labelled real table (evaluation.labelled_table)
    tail = None
    if cfg.labelled_table:
        tail = longtail.longtail_frame(ctx.config, ctx.read_input, _decode, judge=judge, manifest=manifest,
                                       images=images, references=references)
        report = report.rstrip("\n") + "\n\n" + longtail.longtail_markdown(tail, source=cfg.labelled_table,
                                                                         clip_model=cfg.clip_model)
    buf = io.BytesIO()
    metrics.to_parquet(buf, index=False)
    check_lease(ctx)
    storage.write_bytes(EVAL_METRICS, buf.getvalue())
    if tail is not None:
        tail_buf = io.BytesIO()
        tail.to_parquet(tail_buf, index=False)
        storage.write_bytes(EVAL_LONGTAIL, tail_buf.getvalue())
    elif storage.exists(EVAL_LONGTAIL):  # an earlier evaluation's, with a table no longer configured
        storage.delete([EVAL_LONGTAIL])
    storage.write_bytes(EVAL_REPORT, report.encode())
    storage.write_bytes(EVAL_PLOT, ev.plot_metrics(metrics))
    overall = metrics[metrics.concept_id == ev.ALL].set_index("method")
    headline = ["recognisability", "none_of_these", "coverage", "tstr_accuracy", "vendi"]
    return EvaluationRecord(
        metrics_uri=storage.uri(EVAL_METRICS), report_uri=storage.uri(EVAL_REPORT), judge=judge_name,
        per_method={m: {c: (None if pd.isna(v) else float(v)) for c, v in row.items() if c in headline}
                    for m, row in overall.iterrows()},
        longtail_uri=storage.uri(EVAL_LONGTAIL) if tail is not None else None,
        longtail_rare_accuracy=dict(zip(tail.training_set, tail.rare_accuracy.astype(float))) if tail is not None else {},
    )
