"""Benchmark: SeedSelect's convergence claim at the demo's scale. Does refinement started from NAO
seeds reach recognisable rare digits in fewer iterations than refinement started from random seeds?

    .venv/bin/python benchmarks/seedselect.py [--seeds 0 1 2 3 4] [--images 4] [--iterations 30]
                                              [--steps 20] [--out /tmp/normguide-seedselect] [--sd15]

The paper (Samuel et al., AAAI 2024, and NAO, NeurIPS 2023) says SeedSelect needs <= 5 iterations
from NAO seeds instead of 30+ from random seeds. Here, per experiment seed:

- concepts: the demo model's rare digits (2, 5, 8; seen 8 times each in training), 5 real
  references each drawn (seeded) from the held-out reference pool, DDIM-inverted (``--inversion-
  steps``, guidance 1);
- starts: random (N(0, I) seeds), nao, slerp, lerp, cog, nao-fitted (the plan of each method:
  its centroid and interpolants), ``--images`` seeds per start and digit;
- one refinement schedule for every start, fixed before any result was seen: the paper's
  start-from-random schedule (AdamW lr 0.1, / 10 from iteration 3, loss 10 * semantic +
  appearance, ``--steps`` DDIM steps) at guidance 1 (at the demo's default 7.5 every start is
  already 99-100 % recognised, README's quality table, so nothing could be learned there);
  the feature model is the demo's autoencoder (normguide.demo.features), never the judge;
- after 0, 1, 2, 3, 5, 10, 20 and 30 iterations (checkpoints of ONE 30-iteration run): the seeds'
  images (the refinement's own sampler: same steps and guidance) are scored for recognisability
  by the evaluation judge (the demo's CNN, confidence >= 0.5) and by a second classifier trained
  apart from it (scikit-learn SVC on the raw 8 x 8 training digits), the semantic loss, and
  diversity (mean pairwise pixel distance of a start's images of a digit, in [0, 1] units);
- iterations and seconds to reach 90 % recognition (judge, mean over the three digits);
- mean ± std over experiment seeds, paired t-tests (scipy.stats.ttest_rel) NAO vs each start;
- cost: one refinement iteration over 8 seeds (checkpointing on) vs one generation of those 8
  (same steps and guidance), side by side, median of 5; ``--sd15``: peak memory (max RSS of a
  fresh process) of one iteration of a random-weight SD-1.5-size model at 512 px, batch 1, with
  and without checkpointing (``--sd15-steps`` DDIM steps; minutes on a CPU).

Writes ``<out>/seedselect.json`` and the plot ``examples/figures/seedselect/curves.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STARTS = ("random", "nao", "slerp", "lerp", "cog", "nao-fitted")
CHECKPOINTS = (0, 1, 2, 3, 5, 10, 20, 30)


def _second_classifier():
    """SVC on the raw 8 x 8 digits of the judge's training split (another model, other inputs)."""
    from sklearn.svm import SVC

    from normguide.demo import digits as D

    split = D.load_split("judge")
    return SVC(gamma=0.001, C=10.0).fit(split.digits.reshape(len(split), -1), split.labels)


def _to_8x8(images) -> np.ndarray:
    """(N, 64) grey 0..16 from generated RGB images (area-downsampled to 8 x 8)."""
    from PIL import Image

    out = [np.asarray(im.convert("L").resize((8, 8), Image.Resampling.BOX), dtype=np.float64) * 16 / 255
           for im in images]
    return np.stack(out).reshape(len(out), -1)


def _diversity(images) -> float:
    x = np.stack([np.asarray(im.convert("L"), dtype=np.float64).ravel() / 255 for im in images])
    if len(x) < 2:
        return float("nan")
    d = np.sqrt(((x[:, None] - x[None]) ** 2).mean(-1))
    return float(d[np.triu_indices(len(x), 1)].mean())


def run_seed(seed: int, args, model, features, judge, svc) -> dict:
    import torch

    from normguide.data.plan import plan_seeds
    from normguide.demo import digits as D
    from normguide.diffusion import generate_images, invert_images
    from normguide.diffusion.refine import PRESETS, reference_targets, refine_seeds, with_overrides

    settings = with_overrides(PRESETS["random"], iterations=args.iterations, num_inference_steps=args.steps,
                              guidance_scale=1.0, gradient_checkpointing=False)
    rng = np.random.default_rng(seed)
    pool = D.load_split("reference")
    out: dict = {}
    seconds = 0.0
    for label in D.RARE_CLASSES:
        refs_all = pool.of_class(label).images()
        refs = [refs_all[i] for i in sorted(rng.choice(len(refs_all), size=5, replace=False).tolist())]
        prompt = D.prompt_for(label)
        inv = invert_images(model, refs, prompt, num_inference_steps=args.inversion_steps, guidance_scale=1.0,
                            batch_size=5, reconstruction=False, batch_invariant=False)
        plan = plan_seeds(inv.seeds, concept_id=f"digit-{label}", methods=STARTS, num_images=args.images,
                          include_centroid=True, pair_paths=True, centroid_paths=True, include_inversions=False,
                          t_values=None, base_seed=seed)
        starts = [r.method for r in plan.rows]
        targets = reference_targets(model, refs, features)
        snaps: dict[int, torch.Tensor] = {}

        def keep(i, rows, z):
            if i in CHECKPOINTS:
                snaps.setdefault(i, torch.zeros_like(plan.seeds))[rows] = z

        t0 = time.perf_counter()
        res = refine_seeds(model, plan.seeds, prompt, features, targets, settings, batch_size=len(plan.seeds),
                           on_iteration=keep)
        seconds += time.perf_counter() - t0
        for i in CHECKPOINTS:
            if i > args.iterations:
                continue
            images = [im for b in generate_images(model, snaps[i], prompt, num_inference_steps=args.steps,
                                                  guidance_scale=1.0, batch_size=64, batch_invariant=False) for im in b]
            ok_judge = judge.predict(images) == label
            ok_svc = svc.predict(_to_8x8(images)) == label
            sem = res.semantic_history[:, i].numpy()
            for s in STARTS:
                idx = [k for k, m in enumerate(starts) if m == s]
                cell = out.setdefault(s, {}).setdefault(i, {"judge": [], "svc": [], "semantic": [], "diversity": []})
                cell["judge"].append(float(ok_judge[idx].mean()))
                cell["svc"].append(float(ok_svc[idx].mean()))
                cell["semantic"].append(float(np.nanmean(sem[idx])))
                cell["diversity"].append(_diversity([images[k] for k in idx]))
    # mean over the three digits
    summary = {s: {i: {k: float(np.mean(v)) for k, v in cells.items()} for i, cells in per.items()}
               for s, per in out.items()}
    return {"seed": seed, "curves": summary, "refine_seconds": seconds,
            "seeds_refined": len(STARTS) * args.images * len(D.RARE_CLASSES)}


def cost_rows(model, features, repeats: int, steps: int) -> dict:
    """One refinement iteration over 8 seeds vs one generation of those 8 (median of ``repeats``)."""
    import torch

    from normguide.demo import digits as D
    from normguide.diffusion import generate_images
    from normguide.diffusion.refine import PRESETS, reference_targets, refine_seeds, with_overrides

    seeds = torch.randn(8, *model.seed_shape, generator=torch.Generator().manual_seed(0))
    prompt = D.prompt_for(2)
    targets = reference_targets(model, D.reference_images(2, 5), features)
    one = with_overrides(PRESETS["random"], iterations=1, num_inference_steps=steps, guidance_scale=1.0)
    gen_t, ref_t = [], []
    for _ in range(repeats):  # side by side: each repeat times both
        t0 = time.perf_counter()
        list(generate_images(model, seeds, prompt, num_inference_steps=steps, guidance_scale=1.0, batch_size=8,
                             batch_invariant=False))
        gen_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        # iterations=1 runs one pass with a backward and one final pass without: subtract the latter
        refine_seeds(model, seeds, prompt, features, targets, one, batch_size=8)
        ref_t.append(time.perf_counter() - t0)
    g, r = statistics.median(gen_t), statistics.median(ref_t)
    return {"generation_s": g, "refine_call_s": r, "refine_iteration_s": r - g, "ratio": (r - g) / g,
            "generation_all": gen_t, "refine_all": ref_t}


def sd15_memory(steps: int) -> dict:
    """Max RSS of a fresh process running one iteration at SD-1.5 size, with and without checkpointing."""
    res = {}
    for ckpt in (True, False):
        code = f"""
import resource, time, torch, sys
sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(REPO / 'benchmarks')!r})
from gpu_throughput import _sd15_components
from diffusers import DDIMScheduler, StableDiffusionPipeline
from normguide.diffusion import from_pipeline
from normguide.diffusion.refine import RefineSettings, RefineTargets, refine_seeds
torch.manual_seed(0)
pipe = StableDiffusionPipeline(**_sd15_components('cpu'), scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012,
    beta_schedule='scaled_linear', clip_sample=False, set_alpha_to_one=False, steps_offset=1), safety_checker=None,
    feature_extractor=None, requires_safety_checker=False)
m = from_pipeline(pipe, model_id='sd15-random', revision='random')
phi = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(8), torch.nn.Flatten())  # tiny φ: the UNet/VAE dominate
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = RefineTargets(features=torch.nn.functional.normalize(torch.ones(192), dim=0), latent=torch.zeros(1, 4, 64, 64))
t0 = time.perf_counter()
refine_seeds(m, torch.randn(1, 4, 64, 64), 'a photo', phi, t,
             RefineSettings(iterations=1, num_inference_steps={steps}, guidance_scale=1.0, gradient_checkpointing={ckpt}))
print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - t0)
"""
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if p.returncode != 0:  # a negative code is a signal: -9 is what the kernel's OOM killer sends
            why = f"killed by signal {-p.returncode} (SIGKILL: out of memory?)" if p.returncode == -9 else (
                f"exit {p.returncode}: {(p.stderr.strip().splitlines() or [''])[-1]}")
            res[f"checkpointing={ckpt}"] = {"error": why}
            continue
        base, peak, secs = p.stdout.split()[-3:]
        res[f"checkpointing={ckpt}"] = {"model_rss_gib": int(base) / 2**20, "peak_rss_gib": int(peak) / 2**20,
                                        "iteration_peak_over_model_gib": (int(peak) - int(base)) / 2**20,
                                        "seconds": float(secs)}
    return res


def _fmt(v: list[float]) -> str:
    return f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--images", type=int, default=4, help="seeds per start and digit")
    ap.add_argument("--iterations", type=int, default=30)
    ap.add_argument("--steps", type=int, default=20, help="DDIM steps of refinement and of the scored images")
    ap.add_argument("--inversion-steps", type=int, default=20)
    ap.add_argument("--cost-repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sd15", action="store_true", help="also the SD-1.5-size peak-memory row (minutes on a CPU)")
    ap.add_argument("--sd15-steps", type=int, default=3)
    ap.add_argument("--sd15-only", action="store_true", help="only the SD-1.5-size peak-memory row")
    ap.add_argument("--out", type=Path, default=Path("/tmp/normguide-seedselect"))
    ap.add_argument("--plot", type=Path, default=REPO / "examples/figures/seedselect/curves.png")
    args = ap.parse_args()
    if args.sd15_only:
        load0 = os.getloadavg()
        print_sd15(sd15_memory(args.sd15_steps), args.sd15_steps)
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip()
        print(f"\nload average before {load0[0]:.2f}, after {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores); commit {commit}")
        return

    import torch
    from scipy import stats

    from normguide.demo.classifier import load_digit_classifier
    from normguide.demo.features import load_demo_features
    from normguide.diffusion import get_pipeline

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    t_all = time.perf_counter()
    model, features = get_pipeline("demo"), load_demo_features()
    judge, svc = load_digit_classifier(), _second_classifier()

    runs = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        runs.append(run_seed(seed, args, model, features, judge, svc))
        print(f"[seed {seed}] {time.perf_counter() - t0:.0f} s (refinement {runs[-1]['refine_seconds']:.0f} s)", flush=True)
    cost = cost_rows(model, features, args.cost_repeats, args.steps)
    per_seed_iter_s = cost["refine_iteration_s"] / 8

    checkpoints = [i for i in CHECKPOINTS if i <= args.iterations]

    def series(start, i, key):
        return [r["curves"][start][i][key] for r in runs]

    print(f"\nload average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}; at end "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; {len(args.seeds)} experiment seeds, "
          f"{args.images} seeds per start and digit, {args.steps} DDIM steps, guidance 1")
    for key, title in (("judge", "recognised by the evaluation judge"), ("svc", "recognised by the second classifier (SVC)"),
                       ("semantic", "semantic loss"), ("diversity", "diversity (mean pairwise pixel distance)")):
        print(f"\n**{title}**, mean ± std over experiment seeds, after i iterations\n")
        print("| start | " + " | ".join(f"i={i}" for i in checkpoints) + " |")
        print("|---|" + "---|" * len(checkpoints))
        for s in STARTS:
            print(f"| {s} | " + " | ".join(_fmt(series(s, i, key)) for i in checkpoints) + " |")

    print("\n**iterations (and seconds per seed) to reach 90 % recognition** (judge; first checkpoint at or above)\n")
    print("| start | iterations per experiment seed | median | seconds per seed (median) |")
    print("|---|---|---|---|")
    reach = {}
    for s in STARTS:
        its = []
        for r in runs:
            hit = [i for i in checkpoints if r["curves"][s][i]["judge"] >= 0.9]
            its.append(hit[0] if hit else None)
        reach[s] = its
        known = [i for i in its if i is not None]
        med = statistics.median(known) if len(known) == len(its) else ("> " + str(args.iterations) if not known else "n/a")
        secs = f"{med * per_seed_iter_s:.2f}" if isinstance(med, (int, float)) else "-"
        print(f"| {s} | {', '.join('-' if i is None else str(i) for i in its)} | {med} | {secs} |")

    print("\n**paired t-tests, NAO vs each start** (judge recognition, per experiment seed)\n")
    print("| start | i | NAO − start (mean) | t | p |")
    print("|---|---|---|---|---|")
    tests = {}
    for s in STARTS:
        if s == "nao":
            continue
        for i in sorted({0, min(5, args.iterations), args.iterations}):
            a, b = np.array(series("nao", i, "judge")), np.array(series(s, i, "judge"))
            t, p = stats.ttest_rel(a, b) if len(a) > 1 and np.any(a != b) else (float("nan"), float("nan"))
            tests[f"{s}@{i}"] = {"diff": float((a - b).mean()), "t": float(t), "p": float(p)}
            print(f"| {s} | {i} | {(a - b).mean():+.3f} | {t:.2f} | {p:.3g} |")

    print("\n**cost** (demo model, batch 8, {0} DDIM steps, guidance 1, checkpointing on, median of {1})\n".format(
        args.steps, args.cost_repeats))
    print("| one generation of 8 | one refinement iteration of 8 | ratio |")
    print("|---|---|---|")
    print(f"| {cost['generation_s']:.3f} s | {cost['refine_iteration_s']:.3f} s | {cost['ratio']:.2f}x |")
    sd15 = sd15_memory(args.sd15_steps) if args.sd15 else None
    print_sd15(sd15, args.sd15_steps)
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "seedselect.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs, "reach_90": reach, "tests": tests,
         "cost": cost, "sd15": sd15, "load": [load0, os.getloadavg()]}, indent=1))
    _plot(runs, checkpoints, args.plot)
    print(f"wrote {args.out / 'seedselect.json'} and {args.plot}")


def print_sd15(sd15: dict | None, steps: int) -> None:
    if sd15:
        print(f"\n**SD-1.5 size, 512 px, batch 1, {steps} DDIM steps, one iteration (max RSS, GiB)**\n")
        print("| checkpointing | model loaded | peak | peak − model | seconds |")
        print("|---|---|---|---|---|")
        for k, v in sd15.items():
            if "error" in v:
                print(f"| {k.split('=')[1]} | {v['error']} | | | |")
            else:
                print(f"| {k.split('=')[1]} | {v['model_rss_gib']:.2f} | {v['peak_rss_gib']:.2f} | "
                      f"{v['iteration_peak_over_model_gib']:.2f} | {v['seconds']:.0f} |")


def _plot(runs, checkpoints, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for ax, key, title in zip(axes, ("judge", "svc", "semantic"),
                              ("recognised (evaluation judge)", "recognised (second classifier, SVC)", "semantic loss")):
        for s in STARTS:
            m = np.array([[r["curves"][s][i][key] for i in checkpoints] for r in runs])
            mean, sd = m.mean(0), m.std(0, ddof=1) if len(m) > 1 else np.zeros(m.shape[1])
            ax.errorbar(checkpoints, mean, yerr=sd, marker="o", ms=3, capsize=2, label=s, lw=2 if s == "nao" else 1)
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xticks(checkpoints)
        ax.set_xticklabels([str(i) for i in checkpoints])
        ax.set_xlabel("refinement iterations")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].axhline(0.9, color="grey", ls=":", lw=1)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"SeedSelect on the demo's rare digits (2, 5, 8), guidance 1; mean ± std over {len(runs)} experiment seeds")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
