"""``normguide norm-response``: measure the run's model's norm response before choosing a seed
method (normguide.evaluation.norm_response does the measuring; this reads the run's config,
concept table, references and judge, and writes the results).

Writes under ``--output`` (default ``<config output>/norm-response``, a local path or s3:// URI):
``curve.parquet`` and ``curve.csv`` (one row per concept, direction kind and r; "(all)" rows are
the mean over concepts), ``methods.csv`` (each method's seed r per concept), ``inversions.csv``,
``norm_response.png`` (the plot), ``verdict.md`` and ``settings.json``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from normguide.config import RunConfig


def make_judge(spec: str | None, ctx=None):
    """``"digits"`` (the demo's classifier), a local CLIP directory, or None: the run's
    evaluation judge (``evaluation.judge`` / ``clip_model``). One-line ValueError otherwise."""
    from normguide import evaluation as ev

    if spec is None:
        from normguide.pipeline import steps

        judge = steps.evaluation_judge(ctx)
        if judge is None:
            raise ValueError("no judge: this model has no built-in one; pass --judge with a local CLIP directory "
                             "(or 'digits' for the demo model)")
        return judge
    if spec == "digits":
        return ev.DigitsJudge()
    path = Path(spec).expanduser()
    if not path.exists():
        raise ValueError(f"--judge {spec!r}: no such directory; give 'digits' or a local CLIP model directory")
    return ev.ClipJudge(path)


def run_norm_response(cfg: RunConfig, *, judge: str | None = None, radii=None, num_random: int = 12,
                      steps: int | None = None, output: str | None = None, concept_ids: list[str] | None = None,
                      batch_size: int = 64):
    """Measure and write; returns (result, output URI)."""
    from normguide.data.storage import Storage
    from normguide.evaluation import norm_response as nr
    from normguide.pipeline import RunContext
    from normguide.pipeline import steps as st

    radii = nr.check_radii(nr.DEFAULT_RADII if radii is None else radii)
    out = output or f"{cfg.output.rstrip('/')}/norm-response"
    store = Storage.open(out, storage_config=cfg.storage)
    ctx = RunContext.create(cfg, storage=store)
    the_judge = make_judge(judge, ctx)
    concepts = st.load_concepts(ctx, concept_ids)
    inputs = [nr.ConceptInput(c.concept_id, c.name, c.resolved_prompt(cfg.prompt_template), st.read_references(ctx, c))
              for c in concepts]
    if hasattr(the_judge, "label_names"):
        the_judge.label_names([c.name for c in inputs])  # an unknown name fails here, before the model loads
    result = nr.norm_response(
        ctx.model(), inputs, the_judge, radii=radii, num_random=num_random,
        guidance_scale=cfg.generation.guidance_scale,
        num_inference_steps=steps or cfg.generation.num_inference_steps,
        inversion_steps=cfg.inversion.num_inference_steps, inversion_guidance=cfg.inversion.guidance_scale,
        seed=cfg.seed, batch_size=batch_size,
        batch_invariant=cfg.generation.batch_invariant if cfg.generation.batch_invariant is not None else False,
    )
    buf = io.BytesIO()
    result.curve.to_parquet(buf, index=False)
    store.write_bytes("curve.parquet", buf.getvalue())
    store.write_bytes("curve.csv", result.curve.to_csv(index=False, float_format="%.4f").encode())
    store.write_bytes("methods.csv", result.methods.to_csv(index=False, float_format="%.4f").encode())
    store.write_bytes("inversions.csv", result.inversions.to_csv(index=False, float_format="%.4f").encode())
    store.write_bytes("settings.json", json.dumps({**result.settings, "model": cfg.model}, indent=2).encode())
    store.write_bytes("norm_response.png", nr.plot_norm_response(result))
    store.write_bytes("verdict.md", (result.verdict + "\n").encode())
    return result, store.root
