"""Benchmark: which seed method makes the best data for rare concepts, with statistics that can
separate methods, a references-only baseline, and the long-tail augmentation protocol.

    .venv/bin/python benchmarks/quality.py [--seeds 0 1 2 3 4] [--images 16] [--references 5]
                                           [--guidance 1 7.5] [--steps 25] [--out /tmp/normguide-quality]

The demo model (``normguide.demo``) saw the digits 2, 5 and 8 only 8 times each in training: those
are the rare concepts. Per experiment seed (its own ``--references`` real references per digit,
drawn from the held-out reference pool):

1. invert the references (DDIM, ``--inversion-steps`` 50, guidance 1; batched, ``batch_invariant=False``);
2. plan ``--images`` seeds per concept for every method (``normguide.data.plan``, run seed = the
   experiment seed): nao, nao-fitted, slerp, lerp, cog, norm-mean, circle (Diff-II) and random
   (prompt only); the same identical inversions for every method;
3. generate at each ``--guidance`` with ``--steps`` DDIM steps (batched);
4. score (``normguide.evaluation.evaluate``, the demo's digit judge, 350 held-out real test
   digits) with the ``references`` row (the 5 references themselves as the data):
   recognisability, precision, coverage, Vendi, TSTR accuracy (train on one method's images of
   the 3 rare digits only, test on real ones: a 3-way problem, chance 0.33);
5. the long-tail augmentation protocol (``normguide.evaluation.longtail``): train on the
   generator's own long-tailed real training split plus a method's images of the rare digits,
   test on the balanced held-out real test split (10 digits); rare-digit and overall accuracy,
   with linear (logistic regression) and SVM (RBF) classifiers on 16 x 16 grey pixels; baselines
   real only, real + references, real re-weighted, real + 16 more real images per rare digit
   (the ceiling).

Printed: mean ± std over seeds per method; paired differences against NAO (mean, paired t-test
and Wilcoxon signed-rank p-values, scipy.stats); the minimum detectable difference (two-sided
α = 0.05, power 0.8, paired t) at this number of seeds. Also writes every number to
``--out``/results.parquet and the contact sheets of the first seed.
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
METHODS = ("nao", "nao-fitted", "slerp", "lerp", "cog", "norm-mean", "circle", "random")
REF = "references"
EVAL_METRICS = ("recognisability", "precision", "coverage", "vendi", "tstr_accuracy", "seed_zscore_mean")


def _references(seed: int, n: int):
    from normguide.demo import digits

    rng = np.random.default_rng(seed)
    pool = digits.load_split("reference")
    out = {}
    for label in digits.RARE_CLASSES:
        images = pool.of_class(label).images()
        pick = sorted(rng.choice(len(images), size=n, replace=False).tolist())
        out[label] = [images[i] for i in pick]
    return out


def _one_seed(model, seed: int, args, longtail_data) -> tuple[list[dict], dict]:
    """Every number of one experiment seed (rows: seed, guidance, method, block, metric, value)."""
    import torch

    from normguide.data.plan import plan_seeds
    from normguide.demo import digits
    from normguide.diffusion.ddim import generate_images, invert_images
    from normguide.diffusion.loading import LoadedModel  # noqa: F401 - the model's type
    from normguide.evaluation import DigitsJudge, digits_real_test, evaluate
    from normguide.evaluation import longtail as lt
    from normguide.evaluation.metrics import pixel_features
    from normguide.geometry import ChiPrior

    judge = DigitsJudge()
    refs = _references(seed, args.references)
    prior = ChiPrior(model.d)
    plans = {}
    for label, images in refs.items():
        inv = invert_images(model, images, digits.prompt_for(label), num_inference_steps=args.inversion_steps, guidance_scale=1.0,
                            batch_size=64, reconstruction=False, batch_invariant=False).seeds
        cid = f"digit-{digits.CLASS_NAMES[label]}"
        plans[label] = plan_seeds(inv, concept_id=cid, methods=METHODS, num_images=args.images, base_seed=seed)
    rows, sheets = [], {}
    names = {f"digit-{digits.CLASS_NAMES[c]}": digits.CLASS_NAMES[c] for c in refs}
    real_test = digits_real_test(names)
    real_train, real_test_lt, extra_real = longtail_data
    rare = [digits.CLASS_NAMES[c] for c in digits.RARE_CLASSES]
    for g in args.guidance:
        man, imgs = [], []
        for label, plan in plans.items():
            cid = f"digit-{digits.CLASS_NAMES[label]}"
            out = [im for b in generate_images(model, plan.seeds, digits.prompt_for(label), num_inference_steps=args.steps,
                                               guidance_scale=g, batch_size=64, batch_invariant=False) for im in b]
            z = prior.zscore(plan.seeds.reshape(len(plan.rows), -1).double()).tolist()
            for row, im, zz in zip(plan.rows, out, z):
                man.append({"concept_id": cid, "name": digits.CLASS_NAMES[label], "method": row.method, "seed_zscore": zz})
                imgs.append(im)
        manifest = pd.DataFrame(man)
        refs_by_cid = {f"digit-{digits.CLASS_NAMES[c]}": ims for c, ims in refs.items()}
        m = evaluate(manifest, imgs, refs_by_cid, judge, real_test, names, include_references=True)
        for _, r in m[m.concept_id == "(all)"].iterrows():
            for col in EVAL_METRICS:
                rows.append({"seed": seed, "guidance": g, "method": r.method, "block": "eval", "metric": col, "value": float(r[col])})
        # long-tail augmentation
        feats = pixel_features(imgs)
        syn = {meth: lt.Labelled(feats[(manifest.method == meth).to_numpy()],
                                 manifest["name"][manifest.method == meth].to_numpy().astype(str)) for meth in METHODS}
        ref_imgs = [im for c in refs for im in refs[c]]
        ref_lab = [digits.CLASS_NAMES[c] for c in refs for _ in refs[c]]
        table = lt.augmentation_table(real_train, real_test_lt, rare, references=lt.Labelled.of(pixel_features(ref_imgs), ref_lab),
                                      synthetic=syn, extra_real=extra_real, classifiers=args.classifiers)
        for _, r in table.iterrows():
            for col in ("rare_accuracy", "overall_accuracy"):
                rows.append({"seed": seed, "guidance": g, "method": r.training_set, "block": f"longtail-{r.classifier}",
                             "metric": col, "value": float(r[col])})
        if seed == args.seeds[0]:
            sheets[g] = (manifest, imgs)
    return rows, sheets


def _mdd(sd_diff: float, n: int) -> float:
    """Minimum detectable paired difference: (t_{1-α/2, n-1} + t_{power, n-1}) · sd / √n."""
    from scipy import stats

    if n < 2 or not math.isfinite(sd_diff):
        return math.nan
    return float((stats.t.ppf(0.975, n - 1) + stats.t.ppf(0.8, n - 1)) * sd_diff / math.sqrt(n))


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """(mean difference a − b, paired t p, Wilcoxon p); NaN where undefined (all differences 0)."""
    from scipy import stats

    d = a - b
    if len(d) < 2 or np.allclose(d, 0):
        return float(d.mean()) if len(d) else math.nan, math.nan, math.nan
    t_p = float(stats.ttest_rel(a, b).pvalue)
    try:
        w_p = float(stats.wilcoxon(a, b).pvalue)
    except ValueError:
        w_p = math.nan
    return float(d.mean()), t_p, w_p


def _fmt(x: float, nd: int = 3) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{nd}f}"


def _table(df: pd.DataFrame, methods: list[str], metrics: list[str], title: str, n: int) -> list[str]:
    out = [f"\n### {title}", "", "| method | " + " | ".join(metrics) + " |", "| --- |" + " ---: |" * len(metrics)]
    for meth in methods:
        cells = []
        for col in metrics:
            v = df[(df.method == meth) & (df.metric == col)].sort_values("seed").value.to_numpy()
            cells.append("n/a" if len(v) == 0 or not np.isfinite(v).any() else
                         f"{np.nanmean(v):.3f} ± {np.nanstd(v, ddof=1) if len(v) > 1 else 0:.3f}")
        out.append(f"| {meth} | " + " | ".join(cells) + " |")
    # paired differences against NAO
    out += ["", f"paired differences against nao over {n} seeds: mean (t-test p / Wilcoxon p)", "",
            "| method | " + " | ".join(metrics) + " |", "| --- |" + " ---: |" * len(metrics)]
    sds = {col: [] for col in metrics}
    for meth in methods:
        if meth == "nao":
            continue
        cells = []
        for col in metrics:
            a = df[(df.method == meth) & (df.metric == col)].sort_values("seed").value.to_numpy()
            b = df[(df.method == "nao") & (df.metric == col)].sort_values("seed").value.to_numpy()
            if len(a) != len(b) or len(a) == 0:
                cells.append("n/a")
                continue
            d, tp, wp = _paired(a, b)
            if len(a) > 1:
                sds[col].append(float(np.std(a - b, ddof=1)))
            cells.append(f"{d:+.3f} ({_fmt(tp)} / {_fmt(wp)})")
        out.append(f"| {meth} | " + " | ".join(cells) + " |")
    mdd = [_fmt(_mdd(float(np.median(sds[c])) if sds[c] else math.nan, n)) for c in metrics]
    out.append("| minimum detectable difference (median sd of the paired differences) | " + " | ".join(mdd) + " |")
    return out


def _sheet(manifest, imgs, path: Path, scale: int = 2) -> None:
    from PIL import Image, ImageDraw

    groups = list(manifest.groupby(["method", "concept_id"], sort=False).indices.items())
    side = imgs[0].width * scale
    cols = max(len(ix) for _, ix in groups)
    sheet = Image.new("RGB", (130 + cols * (side + 2), len(groups) * (side + 2) + 4), "white")
    draw = ImageDraw.Draw(sheet)
    for r, ((meth, cid), ix) in enumerate(groups):
        y = r * (side + 2) + 2
        draw.text((4, y + side // 2 - 5), f"{meth} {cid.replace('digit-', '')}", fill="black")
        for c, i in enumerate(ix):
            sheet.paste(imgs[i].resize((side, side), Image.NEAREST), (130 + c * (side + 2), y))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--images", type=int, default=16, help="images per concept and method")
    ap.add_argument("--references", type=int, default=5, help="reference images per concept")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 7.5])
    ap.add_argument("--steps", type=int, default=25, help="DDIM steps for generation")
    ap.add_argument("--inversion-steps", type=int, default=50, help="DDIM steps for inversion (guidance 1)")
    ap.add_argument("--classifiers", nargs="+", default=["linear", "svm"])
    ap.add_argument("--out", type=Path, default=Path("/tmp/normguide-quality"))
    ap.add_argument("--sheets", type=Path, default=REPO / "examples" / "figures" / "quality")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from normguide.diffusion.loading import get_pipeline
    from normguide.evaluation import longtail as lt
    from normguide.evaluation.metrics import pixel_features

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    t_all = time.perf_counter()
    model = get_pipeline("demo")
    (tr_im, tr_y), (te_im, te_y), (ex_im, ex_y) = lt.digits_longtail(extra_per_class=args.images)
    longtail_data = (lt.Labelled.of(pixel_features(tr_im), tr_y), lt.Labelled.of(pixel_features(te_im), te_y),
                     lt.Labelled.of(pixel_features(ex_im), ex_y))
    rows = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        r, sheets = _one_seed(model, seed, args, longtail_data)
        rows += r
        for g, (man, imgs) in sheets.items():
            _sheet(man, imgs, args.sheets / f"all_methods_g{g:g}.png")
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s (load {os.getloadavg()[0]:.1f})", flush=True)
    df = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_parquet(args.out / "results.parquet")
    total = time.perf_counter() - t_all
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    n = len(args.seeds)
    lines = [f"# benchmarks/quality.py: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}, "
             f"{n} experiment seeds {args.seeds}, total {total:.0f} s; load average at start "
             f"{load_start[0]:.1f} / {load_start[1]:.1f} / {load_start[2]:.1f}, at end {os.getloadavg()[0]:.1f}",
             f"demo digits model, rare digits 2/5/8, {args.references} references per digit per seed, {args.images} "
             f"images per digit and method, {args.steps} DDIM steps; mean ± std over seeds (each seed: mean over the 3 digits)"]
    methods_eval = [*METHODS, REF]
    for g in args.guidance:
        d = df[(df.guidance == g) & (df.block == "eval")]
        lines += _table(d, methods_eval, list(EVAL_METRICS), f"guidance {g:g}: judge metrics and TSTR (3 rare digits; chance 0.33)", n)
        for clf in args.classifiers:
            d = df[(df.guidance == g) & (df.block == f"longtail-{clf}")]
            sets = list(dict.fromkeys(d.method))
            d = d.assign(method=d.method.str.replace("real + ", "+", regex=False))
            sets = [s.replace("real + ", "+") for s in sets]
            d = d.assign(method=d.method.where(d.method != "+nao", "nao"))  # paired against "+nao"
            sets = ["nao" if s == "+nao" else s for s in sets]
            lines += _table(d, sets, ["rare_accuracy", "overall_accuracy"],
                            f"guidance {g:g}: long-tail augmentation, {clf} classifier (rare digits; overall = balanced over 10)", n)
    text = "\n".join(lines)
    print(text)
    (args.out / "tables.md").write_text(text + "\n")
    print(f"\nresults: {args.out}/results.parquet, tables: {args.out}/tables.md, sheets: {args.sheets}")


if __name__ == "__main__":
    main()
