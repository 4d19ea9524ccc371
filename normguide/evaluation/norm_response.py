"""The norm response of a model: how its images change with the seed's relative norm r = |z|/√d.

A seed z ~ N(0, I_d) has r ≈ 1 (the chi shell) at every d. Seed combinators move r: a LERP
midpoint of two independent seeds has r ≈ 0.707 and a Euclidean mean of K seeds r ≈ 1/√K **at
every d**; COG (√K · mean) and a prior fitted to the inversions keep the inversions' own norms
(which DDIM inversion leaves off the shell, by an amount that depends on the model and the
inversion guidance); NAO and SLERP keep the shell (SLERP: its endpoints' norms). Whether any of
that hurts is a property of the model, not of d: this module measures it.

For each concept: seeds along rays, z = r·√d·u, for every r of a grid, with u (a) random unit
directions (the same rays at every r) and (b) the unit directions of the concept's DDIM-inverted
references; generate with the concept's prompt at the run's guidance; per (concept, direction
kind, r): recognisability and reference similarity by a judge, diversity (mean pairwise cosine
distance of the judge's features, and mean pairwise pixel distance), mean intensity and contrast
(a flat or grey image shows as low contrast). Then where each method's seeds sit on that curve.

    result = norm_response(model, concepts, judge, radii=(0.5, 0.707, 1.0, 1.3))
    result.curve           # the table (one row per concept, direction, r; "(all)" rows: the mean)
    result.methods         # each method's seed r (mean over its planned seeds) per concept
    result.verdict         # the plain-language reading (what peaks where, what it means)
    plot_norm_response(result)   # PNG bytes

No Prefect, no storage: inputs are a loaded model, PIL images and a judge; outputs are frames,
text and PNG bytes (``normguide norm-response`` writes them into the output).
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from normguide.evaluation import metrics as M

if TYPE_CHECKING:
    from PIL import Image

ALL = "(all)"
DIRECTIONS = ("random", "inverted")
#: The default grid of relative norms: from a mean of 11 seeds (0.3) past the shell to where
#: guidance-7.5 inversions and their COG centroids land (1.3-1.6).
DEFAULT_RADII: tuple[float, ...] = (0.3, 0.5, 0.6, 0.707, 0.85, 1.0, 1.15, 1.3, 1.5)
#: Methods placed on the curve (their seeds' r from the concept's inversions).
DEFAULT_METHODS: tuple[str, ...] = ("nao", "nao-fitted", "slerp", "lerp", "cog", "norm-mean", "circle")
#: How far below the peak a point must be to count as "degraded".
DEGRADE = 0.10

CURVE_COLUMNS = ("concept_id", "name", "direction", "r", "n_images", "recognisability", "ref_similarity",
                 "diversity", "pixel_diversity", "mean_intensity", "contrast")


@dataclass(frozen=True)
class ConceptInput:
    """One concept for :func:`norm_response`: its id, name (what the judge scores against),
    prompt and reference images (>= 1)."""

    concept_id: str
    name: str
    prompt: str
    references: Sequence[Image.Image]


@dataclass
class NormResponse:
    curve: pd.DataFrame
    methods: pd.DataFrame
    inversions: pd.DataFrame
    settings: dict[str, Any]
    verdict: str = ""
    images: dict[tuple[str, str], list] = field(default_factory=dict, repr=False)  # (concept, direction) -> rows of images per r


def check_radii(radii: Sequence[float]) -> tuple[float, ...]:
    """The grid, sorted; ValueError (one line) when it is empty or holds a value that is not a
    finite r > 0."""
    try:
        values = [float(r) for r in radii]
    except (TypeError, ValueError):
        raise ValueError(f"radii: expected relative norms r > 0 (numbers), got {radii!r}") from None
    if not values:
        raise ValueError("radii: the grid is empty; give at least one relative norm r = |z|/sqrt(d) > 0, e.g. 0.5,1.0,1.3")
    bad = [r for r in values if not (math.isfinite(r) and r > 0)]
    if bad:
        raise ValueError(f"radii: relative norms must be finite and > 0, got {bad}")
    return tuple(sorted(set(values)))


def _generator(seed: int, concept_id: str):
    import torch

    h = hashlib.sha256(f"norm-response:{seed}:{concept_id}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(h[:8], "big") & (2**53 - 1))


def _pixel_diversity(pixels: np.ndarray) -> float:
    """Mean pairwise Euclidean distance between images' 16 x 16 grey pixels (in [0, 1])."""
    n = pixels.shape[0]
    if n < 2:
        return M.NAN
    from scipy.spatial.distance import pdist

    return float(pdist(pixels).mean())


def method_norms(inverted, methods: Sequence[str], *, concept_id: str, num_images: int = 8, base_seed: int = 0) -> pd.DataFrame:
    """Where each seed method's seeds sit: for the K inverted seeds ``(K, *shape)``, plan
    ``num_images`` seeds per method (``normguide.data.plan``) and give their relative norms
    (mean, min, max; the centroid's separately when the method has one). Methods that cannot plan
    from these inversions (e.g. circle with K = 1) are left out."""
    import torch

    from normguide.data.plan import plan_seeds

    d = int(np.prod(inverted.shape[1:]))
    rows = []
    for m in methods:
        try:
            plan = plan_seeds(inverted, concept_id=concept_id, methods=(m,), num_images=num_images, base_seed=base_seed)
        except ValueError:
            continue
        r = (plan.seeds.reshape(len(plan.rows), -1).to(torch.float64).norm(dim=-1) / math.sqrt(d)).numpy()
        cen = [i for i, row in enumerate(plan.rows) if row.kind == "centroid"]
        rows.append({"concept_id": concept_id, "method": m, "r_mean": float(r.mean()), "r_min": float(r.min()),
                     "r_max": float(r.max()), "r_centroid": float(r[cen[0]]) if cen else M.NAN})
    return pd.DataFrame(rows, columns=["concept_id", "method", "r_mean", "r_min", "r_max", "r_centroid"])


def norm_response(
    model,
    concepts: Sequence[ConceptInput],
    judge,
    *,
    radii: Sequence[float] = DEFAULT_RADII,
    num_random: int = 12,
    directions: Sequence[str] = DIRECTIONS,
    guidance_scale: float = 7.5,
    num_inference_steps: int = 25,
    inversion_steps: int = 50,
    inversion_guidance: float = 1.0,
    methods: Sequence[str] = DEFAULT_METHODS,
    seed: int = 0,
    batch_size: int = 64,
    batch_invariant: bool | None = False,
    keep_images: bool = True,
) -> NormResponse:
    """Measure the norm response of ``model`` (a ``normguide.diffusion.LoadedModel``).

    - ``concepts``: :class:`ConceptInput` list (names must be ones the judge knows).
    - ``judge``: a :class:`~normguide.evaluation.judges.Judge` (the demo's digits judge, or CLIP).
    - ``radii``: the grid of relative norms r = |z|/√d (:func:`check_radii`).
    - ``num_random``: random rays per concept (the same directions at every r).
    - ``directions``: ``"random"`` and/or ``"inverted"`` (one ray per reference: its inversion's
      direction).
    - generation: DDIM with ``num_inference_steps`` at ``guidance_scale``; inversion (only for the
      inverted rays and the method norms) with ``inversion_steps`` at ``inversion_guidance``,
      as a run inverts its references.
    - ``batch_invariant``: False (default) runs batches whole, the fast mode (ddim's docstring).

    Deterministic given the seed (and, without batch invariance, the batch size and hardware).
    """
    import torch

    from normguide.diffusion.sampling import generate_images, invert_images

    radii = check_radii(radii)
    directions = tuple(dict.fromkeys(directions))
    unknown = [x for x in directions if x not in DIRECTIONS]
    if unknown or not directions:
        raise ValueError(f"directions: expected some of {DIRECTIONS}, got {list(directions)}")
    if num_random < 1 and "random" in directions:
        raise ValueError(f"num_random must be >= 1, got {num_random}")
    if not concepts:
        raise ValueError("concepts: give at least one concept")
    lacking = [c.concept_id for c in concepts if len(c.references) == 0]
    if lacking:
        raise ValueError(f"no reference images for concept(s) {lacking}: every concept needs at least one")

    shape = tuple(model.seed_shape)
    d = int(np.prod(shape))
    scale = math.sqrt(d)
    names = [c.name for c in concepts]
    labels = list(judge.label_names(names)) if hasattr(judge, "label_names") else list(dict.fromkeys(names))
    min_conf = float(getattr(judge, "min_confidence", 0.0))

    records, method_frames, inv_rows = [], [], []
    kept: dict[tuple[str, str], list] = {}
    for concept in concepts:
        cid = concept.concept_id
        refs = list(concept.references)
        inv = invert_images(model, refs, concept.prompt, num_inference_steps=inversion_steps,
                            guidance_scale=inversion_guidance, batch_size=batch_size, reconstruction=False,
                            batch_invariant=batch_invariant).seeds
        inv_flat = inv.reshape(len(refs), -1).to(torch.float64)
        inv_r = (inv_flat.norm(dim=-1) / scale).numpy()
        inv_rows.append({"concept_id": cid, "n": len(refs), "r_mean": float(inv_r.mean()),
                         "r_std": float(inv_r.std(ddof=1)) if len(refs) > 1 else 0.0})
        method_frames.append(method_norms(inv, methods, concept_id=cid, base_seed=seed))

        rays: dict[str, torch.Tensor] = {}
        if "random" in directions:
            u = torch.randn(num_random, d, generator=_generator(seed, cid), dtype=torch.float64)
            rays["random"] = u / u.norm(dim=-1, keepdim=True)
        if "inverted" in directions:
            rays["inverted"] = inv_flat / inv_flat.norm(dim=-1, keepdim=True)
        # every seed of the concept in one generation call: (direction, r, ray) order
        blocks = [(kind, r, u) for kind, u in rays.items() for r in radii]
        seeds = torch.cat([(r * scale * u) for _, r, u in blocks]).to(torch.float32).reshape(-1, *shape)
        images = [im for batch in generate_images(model, seeds, concept.prompt, num_inference_steps=num_inference_steps,
                                                  guidance_scale=guidance_scale, batch_size=batch_size,
                                                  batch_invariant=batch_invariant) for im in batch]
        feats = np.asarray(judge.embed(images), dtype=np.float64)
        ref_feats = np.asarray(judge.embed(refs), dtype=np.float64)
        probs = np.asarray(judge.class_probs(images, labels), dtype=np.float64)
        pixels = M.pixel_features(images)
        target = labels.index(concept.name)
        start = 0
        for kind, r, u in blocks:
            n = u.shape[0]
            idx = slice(start, start + n)
            start += n
            px = pixels[idx]
            records.append({
                "concept_id": cid, "name": concept.name, "direction": kind, "r": r, "n_images": n,
                "recognisability": M.recognisability(probs[idx], target, min_conf),
                "ref_similarity": M.reference_similarity(feats[idx], ref_feats),
                "diversity": M.mean_pairwise_distance(feats[idx]),
                "pixel_diversity": _pixel_diversity(px),
                "mean_intensity": float(px.mean()),
                "contrast": float(px.std(axis=1).mean()),
            })
            if keep_images:
                kept.setdefault((cid, kind), []).append(images[idx])
    curve = pd.DataFrame.from_records(records, columns=list(CURVE_COLUMNS))
    metric_cols = list(CURVE_COLUMNS[5:])
    agg = curve.groupby(["direction", "r"], sort=False).agg({"n_images": "sum", **{c: "mean" for c in metric_cols}}).reset_index()
    agg.insert(0, "name", ALL)
    agg.insert(0, "concept_id", ALL)
    curve = pd.concat([curve, agg[list(CURVE_COLUMNS)]], ignore_index=True)
    result = NormResponse(
        curve=curve,
        methods=pd.concat(method_frames, ignore_index=True) if method_frames else pd.DataFrame(),
        inversions=pd.DataFrame(inv_rows),
        settings={"d": d, "seed_shape": list(shape), "radii": list(radii), "num_random": num_random,
                  "directions": list(directions), "guidance_scale": guidance_scale,
                  "num_inference_steps": num_inference_steps, "inversion_steps": inversion_steps,
                  "inversion_guidance": inversion_guidance, "seed": seed, "judge": getattr(judge, "name", type(judge).__name__),
                  "concepts": [c.concept_id for c in concepts]},
        images=kept,
    )
    result.verdict = verdict(result)
    return result


# --------------------------------------------------------------------------------------------------
# Reading the curve


def _overall(result: NormResponse, direction: str) -> pd.DataFrame:
    c = result.curve
    return c[(c.concept_id == ALL) & (c.direction == direction)].sort_values("r")


def _peak(sub: pd.DataFrame, col: str) -> tuple[float, float]:
    vals = sub[col].to_numpy(dtype=float)
    if not np.isfinite(vals).any():
        return M.NAN, M.NAN
    i = int(np.nanargmax(vals))
    return float(sub["r"].iloc[i]), float(vals[i])


def predicted(result: NormResponse, r: float, col: str = "recognisability", direction: str | None = None) -> float:
    """The curve's value at relative norm r (linear interpolation; NaN outside the grid)."""
    direction = direction or ("inverted" if "inverted" in result.settings["directions"] else "random")
    sub = _overall(result, direction)
    xs, ys = sub["r"].to_numpy(float), sub[col].to_numpy(float)
    if len(xs) == 0 or not (xs[0] - 1e-9 <= r <= xs[-1] + 1e-9):
        return M.NAN
    return float(np.interp(r, xs, ys))


def verdict(result: NormResponse) -> str:
    """The plain-language reading of a :class:`NormResponse` (also ``result.verdict``)."""
    lines = []
    s = result.settings
    lines.append(f"norm response at guidance {s['guidance_scale']:g}, {s['num_inference_steps']} steps, d = {s['d']} "
                 f"(judge: {s['judge']}); r = |z|/sqrt(d), the shell of N(0, I) seeds is r = 1 at every d.")
    for direction in s["directions"]:
        sub = _overall(result, direction)
        if sub.empty:
            continue
        r_rec, rec = _peak(sub, "recognisability")
        r_sim, _ = _peak(sub, "ref_similarity")
        r_div, _ = _peak(sub, "diversity")
        first, last = sub.iloc[0], sub.iloc[-1]
        rec_txt = "n/a (the judge needs >= 2 labels)" if not math.isfinite(rec) else f"{rec:.2f} at r = {r_rec:g}"
        lines.append(f"- {direction} rays: recognisability peaks {rec_txt}; reference similarity peaks at r = {r_sim:g}; "
                     f"diversity peaks at r = {r_div:g} (feature distance {first.diversity:.3f} at r = {first.r:g} -> "
                     f"{last.diversity:.3f} at r = {last.r:g}).")
        if math.isfinite(rec):
            low = float(first.recognisability) < rec - DEGRADE
            high = float(last.recognisability) < rec - DEGRADE
            lines.append(f"  low-norm seeds {'DEGRADE' if low else 'do not degrade'} (r = {first.r:g}: {first.recognisability:.2f}); "
                         f"high-norm seeds {'DEGRADE' if high else 'do not degrade'} (r = {last.r:g}: {last.recognisability:.2f}).")
        flat = float(first.contrast) < 0.5 * float(sub["contrast"].max())
        lines.append(f"  contrast {first.contrast:.3f} at r = {first.r:g} vs {last.contrast:.3f} at r = {last.r:g}"
                     f"{': low-norm images go flat' if flat else ': no flat or grey images at low norm'}.")
        rec_vals = sub["recognisability"].to_numpy(float)
        div_vals = sub["diversity"].to_numpy(float)
        if len(sub) >= 3 and np.isfinite(rec_vals).all():
            rho_rec = _spearman(sub["r"].to_numpy(float), rec_vals)
            rho_div = _spearman(sub["r"].to_numpy(float), div_vals)
            if rho_rec < -0.5 and rho_div > 0.5:
                lines.append("  norm acts as a sampling temperature here: lower r, more prototypical and less diverse; "
                             "higher r, more diverse and less recognisable.")
    inv = result.inversions
    if not inv.empty:
        lines.append(f"- the references' DDIM inversions (guidance {s['inversion_guidance']:g}) sit at r = "
                     f"{inv.r_mean.mean():.2f} (per concept {', '.join(f'{x:.2f}' for x in inv.r_mean)}).")
    m = result.methods
    if not m.empty:
        lines.append("- where each method's seeds sit, and the curve's recognisability there (inverted rays):")
        per = m.groupby("method", sort=False).agg(r_mean=("r_mean", "mean"), r_min=("r_min", "min"), r_max=("r_max", "max"))
        for name, row in per.iterrows():
            p = predicted(result, float(row.r_mean))
            ptxt = "outside the grid" if not math.isfinite(p) else f"{p:.2f}"
            lines.append(f"    {name:<11} r = {row.r_mean:.2f} ({row.r_min:.2f}-{row.r_max:.2f})  -> {ptxt}")
        lines.append("  LERP and Euclidean means shrink norms (a midpoint of two independent seeds by 1/sqrt 2, a mean of K "
                     "by 1/sqrt K, at every d); COG and the fitted prior keep the inversions' norms (COG inflates them "
                     "when the inversions are correlated); NAO keeps the shell and SLERP, circle and norm-mean the "
                     "inversions' norms.")
        best = _overall(result, "inverted" if "inverted" in s["directions"] else "random")
        if not best.empty and best.recognisability.notna().any():
            r_best, rec_best = _peak(best, "recognisability")
            worse = [n for n, row in per.iterrows() if math.isfinite(p := predicted(result, float(row.r_mean))) and p < rec_best - DEGRADE]
            lines.append(f"  on this model the most recognisable seeds are at r = {r_best:g}; "
                         + (f"methods whose seeds sit where recognisability is {DEGRADE:.2f}+ lower: {', '.join(worse)}."
                            if worse else "no method's seeds sit where recognisability drops by more than "
                            f"{DEGRADE:.2f}.")
                         + " Weigh this against diversity (the right panel): a lower-norm method trades diversity for it.")
    return "\n".join(lines)


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.nanstd(y) == 0:
        return 0.0
    return float(spearmanr(x, y).statistic)


# --------------------------------------------------------------------------------------------------
# The plot


def plot_norm_response(result: NormResponse, *, strip_rays: int = 6) -> bytes:
    """PNG bytes: recognisability (left) and diversity (right) against r, per direction kind (mean
    over concepts, thin lines per concept), the shell (r = 1) and each method's mean seed r marked;
    below, the first concept's images along ``strip_rays`` random rays (rows) at every r (columns)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    c = result.curve
    s = result.settings
    colours = {"random": "tab:blue", "inverted": "tab:orange"}
    strip_key = next(((cid, k) for cid in s["concepts"] for k in ("random", "inverted") if (cid, k) in result.images), None)
    fig = plt.figure(figsize=(11, 7.8 if strip_key else 4.2), dpi=110)
    grid = fig.add_gridspec(2 if strip_key else 1, 2, height_ratios=[1, 1.05] if strip_key else [1])
    axes = [fig.add_subplot(grid[0, 0]), fig.add_subplot(grid[0, 1])]
    per = result.methods.groupby("method", sort=False)["r_mean"].mean() if not result.methods.empty else pd.Series(dtype=float)
    for ax, col, title in ((axes[0], "recognisability", "recognisability (judge)"),
                           (axes[1], "diversity", "diversity (mean pairwise feature distance)")):
        for kind in s["directions"]:
            for cid in s["concepts"]:
                sub = c[(c.concept_id == cid) & (c.direction == kind)].sort_values("r")
                ax.plot(sub.r, sub[col], color=colours[kind], alpha=0.25, lw=0.8)
            sub = _overall(result, kind)
            ax.plot(sub.r, sub[col], "o-", color=colours[kind], lw=2, label=f"{kind} rays (mean)")
        ax.axvline(1.0, color="grey", lw=1, ls="--")
        lo, hi = ax.get_ylim()
        for i, (name, r) in enumerate(per.items()):
            ax.axvline(r, color="tab:green", lw=0.8, ls=":")
            ax.text(r, hi - (0.06 + 0.07 * (i % 4)) * (hi - lo), name, fontsize=7, rotation=0, ha="center", color="darkgreen",
                    bbox={"facecolor": "white", "edgecolor": "none", "alpha": 0.7, "pad": 0.5})
        ax.set_xlabel("relative seed norm r = |z| / sqrt(d)   (dashed: the N(0, I) shell)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"norm response, guidance {s['guidance_scale']:g}, {s['num_inference_steps']} steps, d = {s['d']}, "
                 f"concepts: {', '.join(s['concepts'])}", fontsize=10)
    if strip_key:
        rows = result.images[strip_key]  # per r: the images of that r
        n_rays = min(strip_rays, min(len(x) for x in rows))
        side = 32
        canvas = np.full((n_rays * (side + 2), len(rows) * (side + 2), 3), 255, dtype=np.uint8)
        for j, ims in enumerate(rows):
            for i in range(n_rays):
                arr = np.asarray(ims[i].convert("RGB").resize((side, side)))
                canvas[i * (side + 2): i * (side + 2) + side, j * (side + 2): j * (side + 2) + side] = arr
        ax = fig.add_subplot(grid[1, :])
        ax.imshow(canvas, interpolation="nearest")
        ax.set_yticks([])
        ax.set_xticks([j * (side + 2) + side / 2 for j in range(len(rows))], [f"r={r:g}" for r in s["radii"]], fontsize=8)
        ax.set_title(f"{strip_key[0]}: the same {strip_key[1]} rays (rows) at each r (columns)", fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
