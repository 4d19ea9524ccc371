"""Benchmark: the paper's comparison at this scale. Which seeds make the best data for rare concepts?

    .venv/bin/python benchmarks/quality.py [--seeds 0 1 2] [--images 16] [--references 5]
                                           [--guidance 1 7.5] [--out /tmp/normguide-quality]

The demo model (a small Stable-Diffusion-architecture model trained on scikit-learn's digits,
``normguide.demo``) saw the digits 2, 5 and 8 only 8 times each in training: those are the rare
concepts. Every experiment seed runs the product's own pipeline (``normguide.pipeline.run_dataset``,
evaluation on) once per guidance scale, with:

- concepts: one per rare digit, prompt "a handwritten digit <name>", ``--references`` real
  reference images drawn (seeded by the experiment seed) from the held-out reference pool;
- methods: nao, nao-fitted, paper, slerp, lerp, cog and random (prompt only), the same image
  budget each (``--images`` per concept and method: the centroid + interpolants, or random seeds);
- generation at each ``--guidance`` (default: 1, and the product's default 7.5), 50 DDIM steps;
  inversion 50 steps at guidance 1. The seeds are guidance-independent, so the second guidance
  reuses the first run's seeds files (inversion and planning are not repeated).

Evaluation (``normguide.evaluation``, digits judge = the demo's classifier, trained on real digits
only; real test images = the held-out test split, never seen by any training):
recognisability, precision/recall/density/coverage against the real test digits, Vendi
diversity, and TSTR accuracy (a classifier trained only on the method's synthetic images of the
three concepts, tested on the real test digits). Each cell of the printed table is the mean over
the experiment seeds of the mean over the three concepts, ± the standard deviation over seeds.

Also writes one contact sheet per method (rows: concepts; first experiment seed, last guidance)
and a combined sheet to ``--sheets`` (default examples/figures/quality/).
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
METHODS = ("nao", "nao-fitted", "paper", "slerp", "lerp", "cog", "random")
METRICS = ("recognisability", "precision", "coverage", "vendi", "tstr_accuracy", "seed_zscore_mean")


def _concept_table(seed: int, references: int, workdir: Path) -> str:
    from normguide.data.schema import write_concept_table
    from normguide.demo import digits

    rng = np.random.default_rng(seed)
    pool = digits.load_split("reference")
    rows = []
    for label in digits.RARE_CLASSES:
        name = digits.CLASS_NAMES[label]
        images = pool.of_class(label).images()
        pick = sorted(rng.choice(len(images), size=references, replace=False).tolist())
        refs = []
        for i in pick:
            path = workdir / "refs" / name / f"{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            images[i].save(path)
            refs.append(str(path))
        rows.append({"concept_id": f"digit-{name}", "name": name, "reference_uris": refs,
                     "prompt": digits.prompt_for(label), "num_images": None})
    table = workdir / "concepts.parquet"
    write_concept_table(rows, table)
    return str(table)


def _config(table: str, out: Path, seed: int, images: int, guidance: float):
    from normguide.config import RunConfig

    return RunConfig.model_validate({
        "concepts": table, "output": str(out), "model": "demo", "seed": seed,
        "inversion": {"num_inference_steps": 50, "guidance_scale": 1.0, "reconstruction": True},
        "generation": {"num_inference_steps": 50, "guidance_scale": guidance, "batch_size": 8},
        "plan": {"methods": list(METHODS), "num_images": images},
        "evaluation": {"enabled": True, "judge": "digits"},
    })


def _sheet(images: list[list[Image.Image]], labels: list[str], title: str, scale: int = 2) -> Image.Image:
    cols = max(len(r) for r in images)
    side = images[0][0].width * scale
    pad, left, top = 2, 60, 18
    sheet = Image.new("RGB", (left + cols * (side + pad), top + len(images) * (side + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text((4, 2), title, fill="black")
    for r, (row, label) in enumerate(zip(images, labels)):
        y = top + r * (side + pad)
        draw.text((4, y + side // 2 - 5), label, fill="black")
        for c, im in enumerate(row):
            sheet.paste(im.resize((side, side), Image.NEAREST), (left + c * (side + pad), y))
    return sheet


def _method_sheets(run_root: Path, out_dir: Path, guidance: float) -> None:
    manifest = pd.read_parquet(run_root / "manifest.parquet")
    out_dir.mkdir(parents=True, exist_ok=True)
    combined = []
    for method in METHODS:
        rows, labels = [], []
        for cid, part in manifest[manifest.method == method].groupby("concept_id", sort=False):
            rows.append([Image.open(run_root / "images" / cid / f"{i}.png").convert("RGB") for i in part.image_id])
            labels.append(cid.replace("digit-", ""))
        sheet = _sheet(rows, labels, f"{method} (guidance {guidance:g})")
        sheet.save(out_dir / f"{method}.png")
        combined.append(sheet)
    width = max(s.width for s in combined)
    whole = Image.new("RGB", (width, sum(s.height for s in combined)), "white")
    y = 0
    for s in combined:
        whole.paste(s, (0, y))
        y += s.height
    whole.save(out_dir / "all_methods.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--images", type=int, default=16, help="images per concept and method")
    ap.add_argument("--references", type=int, default=5, help="reference images per concept")
    ap.add_argument("--guidance", type=float, nargs="+", default=[1.0, 7.5])
    ap.add_argument("--out", type=Path, default=Path("/tmp/normguide-quality"))
    ap.add_argument("--sheets", type=Path, default=REPO / "examples" / "figures" / "quality")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    from normguide.pipeline import output_root, run_dataset

    torch.set_num_threads(args.threads)
    shutil.rmtree(args.out, ignore_errors=True)
    frames = []
    t_all = time.perf_counter()
    for seed in args.seeds:
        workdir = args.out / f"seed{seed}"
        table = _concept_table(seed, args.references, workdir)
        first_root = None
        for guidance in args.guidance:
            cfg = _config(table, workdir / "runs", seed, args.images, guidance)
            root = Path(output_root(cfg))
            if first_root is not None:  # same seeds: reuse inversion and plan
                shutil.copytree(first_root / "seeds", root / "seeds")
            t0 = time.perf_counter()
            summary = run_dataset(cfg)
            if not summary.ok:
                raise SystemExit(f"seed {seed}, guidance {guidance}: run failed: {summary}")
            print(f"seed {seed} guidance {guidance:g}: {time.perf_counter() - t0:.0f} s", flush=True)
            first_root = first_root or root
            m = pd.read_parquet(io.BytesIO((root / "eval" / "metrics.parquet").read_bytes()))
            frames.append(m.assign(seed=seed, guidance=guidance))
            if seed == args.seeds[0] and guidance == args.guidance[-1]:
                _method_sheets(root, args.sheets, guidance)
    allm = pd.concat(frames)
    allm.to_parquet(args.out / "metrics.parquet")

    overall = allm[allm.concept_id == "(all)"]
    n_img = int(overall.n_images.iloc[0])
    print(f"\ndemo digits model, rare digits 2/5/8 (8 training images each), {args.references} held-out references per "
          f"concept, {n_img // 3} images per concept and method, 50 steps; mean over the 3 concepts, then mean ± std "
          f"over {len(args.seeds)} experiment seeds {args.seeds}; total {time.perf_counter() - t_all:.0f} s")
    for guidance in args.guidance:
        g = overall[overall.guidance == guidance]
        print(f"\nguidance {guidance:g}")
        print(f"{'method':<11}" + "".join(f"{c:>22}" for c in METRICS))
        for method in METHODS:
            cells = []
            for col in METRICS:
                vals = [float(v) for v in g[g.method == method][col] if pd.notna(v)]
                if not vals:
                    cells.append("n/a")
                    continue
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.fmean(vals):.3f} ± {sd:.3f}")
            print(f"{method:<11}" + "".join(f"{c:>22}" for c in cells))
    print(f"\ncontact sheets: {args.sheets}")


if __name__ == "__main__":
    main()
