"""Train the shipped demo model and its digit classifier from scratch, on CPU, deterministically.

    python scripts/train_demo.py --out normguide/demo/weights          # the real run (< 20 min, 2 cores)
    python scripts/train_demo.py --out /tmp/smoke --smoke              # a few steps, end to end
    python scripts/train_demo.py --out normguide/demo/weights --only features   # the refinement
                                    feature model alone (``<out>/features``; nothing else is touched)

What it trains (hyper-parameters in ``HPARAMS``; the prototype's, see shared/QUALITY.md, scaled to
32 px images):

1. the judge (``normguide.demo.classifier``) on the ``"judge"`` split (all non-held-out real
   digits), tested on the held-out ``"test"`` split;
2. a VAE (diffusers ``AutoencoderKL``, 3 blocks (16, 32, 64): 32 x 32 px RGB -> latent 4 x 8 x 8,
   d = 256) on the ``"generative"`` split; its scaling factor makes the latents unit-variance;
3. a text encoder (``CLIPTextModel``: hidden 32, 2 layers, 2 heads, FFN 64; the locally generated
   CLIP BPE tokenizer with every prompt word one token) and a UNet (``UNet2DConditionModel``, SD 1.x
   layout, (32, 64), cross-attention on the text) jointly, epsilon prediction on the Stable
   Diffusion schedule (scaled-linear betas 0.00085-0.012, 1,000 steps), 10 % empty prompts for
   classifier-free guidance, EMA of the weights;
4. checks: the generation accuracy per digit from random seeds at guidance 1 and 3 (50 DDIM steps,
   judged by the classifier), and a contact sheet (``samples.png``: one row per digit, left half
   guidance 1, right half guidance 3).

Everything is seeded (``--seed``, default 0) and runs on ``--threads`` (default 2) CPU threads; on
the same machine, thread count and library versions it reproduces the same weights. Output:
``<out>/pipeline`` (``StableDiffusionPipeline.save_pretrained``, safetensors, float32),
``<out>/classifier`` (safetensors + config.json), ``<out>/TRAINING.json`` and ``<out>/TRAINING.md``
(hyper-parameters, split, seeds, times, accuracies), ``<out>/samples.png``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from normguide.demo import digits as D

PROMPT_WORDS: tuple[str, ...] = ("a", "handwritten", "digit", *D.CLASS_NAMES)

HPARAMS: dict = {
    "seed": 0,
    "threads": 2,
    "flush_denormal": True,  # subnormal floats from the black backgrounds made CPU steps 2.5x slower
    "resolution": D.RESOLUTION,
    "classifier": {"epochs": 30, "batch_size": 64, "lr": 2e-3, "width": 32},
    "vae": {
        "block_out_channels": [16, 32, 64],
        "layers_per_block": 1,
        "latent_channels": 4,
        "norm_num_groups": 8,
        "steps": 1200,
        "batch_size": 64,
        "lr": 1e-3,
        "warmup_steps": 50,
        "lr_schedule": "linear warm-up, then cosine to 10%",
        "kl_weight": 1e-5,
    },
    "text_encoder": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                     "max_position_embeddings": 77, "hidden_act": "quick_gelu"},
    "unet": {
        "block_out_channels": [32, 64],
        "layers_per_block": 1,
        "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D"],
        "up_block_types": ["CrossAttnUpBlock2D", "UpBlock2D"],
        "attention_head_dim": 8,
        "norm_num_groups": 8,
        "steps": 3600,
        "batch_size": 128,
        "lr": 1e-3,
        "warmup_steps": 200,
        "lr_schedule": "linear warm-up, then constant",
        "weight_decay": 0.01,
        "grad_clip": 1.0,
        "ema_decay": 0.999,
        "prompt_dropout": 0.1,
    },
    "scheduler": {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012,
                  "beta_schedule": "scaled_linear", "prediction_type": "epsilon"},
    "eval": {"per_class": 50, "guidance": [1.0, 3.0], "num_inference_steps": 50, "seed": 1234, "sheet_per_row": 10},
}

#: The refinement feature model (``normguide.demo.features``): trained by its own step, which writes
#: only ``<out>/features`` (its weights, config and TRAINING.json), never the other weights.
FEATURES_HPARAMS: dict = {"epochs": 12, "batch_size": 64, "lr": 2e-3, "width": 16}

SMOKE = {"classifier": {"epochs": 1}, "vae": {"steps": 4}, "unet": {"steps": 6, "warmup_steps": 2},
         "eval": {"per_class": 2, "num_inference_steps": 4, "sheet_per_row": 2}}


# 1. Components -------------------------------------------------------------------------------------


def build_vae(hp: dict):
    from diffusers import AutoencoderKL

    n = len(hp["block_out_channels"])
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(hp["block_out_channels"]),
        layers_per_block=hp["layers_per_block"],
        latent_channels=hp["latent_channels"],
        norm_num_groups=hp["norm_num_groups"],
        sample_size=D.RESOLUTION,
    )


def build_text_encoder(hp: dict, vocab_size: int):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size,
        projection_dim=hp["hidden_size"],
        layer_norm_eps=1e-5,
        bos_token_id=vocab_size - 2,  # the demo tokenizer puts its two special tokens last
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
        **hp,
    )
    return CLIPTextModel(config)


def build_unet(hp: dict, cross_attention_dim: int, latent_side: int, latent_channels: int):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=latent_side,
        in_channels=latent_channels,
        out_channels=latent_channels,
        block_out_channels=tuple(hp["block_out_channels"]),
        layers_per_block=hp["layers_per_block"],
        down_block_types=tuple(hp["down_block_types"]),
        up_block_types=tuple(hp["up_block_types"]),
        attention_head_dim=hp["attention_head_dim"],
        norm_num_groups=hp["norm_num_groups"],
        cross_attention_dim=cross_attention_dim,
    )


def build_scheduler(hp: dict):
    from diffusers import DDIMScheduler

    # Stable Diffusion's schedule and DDIM settings (as normguide.diffusion.demo's sd1 demo).
    return DDIMScheduler(**hp, clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")


def _lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    if step < warmup:
        return (step + 1) / warmup
    if schedule.startswith("linear warm-up, then cosine"):
        progress = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return 1.0


# 2. Training ---------------------------------------------------------------------------------------


def train_vae(x: torch.Tensor, hp: dict, gen: torch.Generator, log) -> nn.Module:
    """VAE on images x (N, 3, R, R) in [-1, 1]: MSE reconstruction + kl_weight * KL, posterior samples."""
    vae = build_vae(hp)
    opt = torch.optim.AdamW(vae.parameters(), lr=hp["lr"], weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _lr_factor(s, hp["warmup_steps"], hp["steps"], hp["lr_schedule"])
    )
    vae.train()
    start, running = time.perf_counter(), []
    for step in range(hp["steps"]):
        xb = x[torch.randint(0, len(x), (hp["batch_size"],), generator=gen)]
        post = vae.encode(xb).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=gen)
        rec = vae.decode(z).sample
        mse = (rec - xb).pow(2).mean()
        loss = mse + hp["kl_weight"] * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running.append(mse.item())
        if (step + 1) % 100 == 0 or step + 1 == hp["steps"]:
            log(f"  vae step {step + 1}/{hp['steps']}: mse {np.mean(running):.5f} ({time.perf_counter() - start:.0f} s)")
            running = []
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode_means(vae, x: torch.Tensor) -> torch.Tensor:
    """Unscaled posterior means (N, C, h, w)."""
    return torch.cat([vae.encode(chunk).latent_dist.mean for chunk in x.split(256)])


@torch.no_grad()
def reconstruct(vae, x: torch.Tensor) -> torch.Tensor:
    return torch.cat([vae.decode(vae.encode(c).latent_dist.mean).sample for c in x.split(256)]).clamp(-1, 1)


def train_denoiser(latents, labels, tokenizer, text_encoder, unet, scheduler, hp: dict, gen, log):
    """Joint text encoder + UNet training (epsilon loss); returns EMA copies of both."""
    prompts = [D.prompt_for(c) for c in range(10)] + [""]  # index 10: the empty prompt
    ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: _lr_factor(s, hp["warmup_steps"], hp["steps"], hp["lr_schedule"])
    )
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    ema_params = list(ema_unet.parameters()) + list(ema_text.parameters())
    alphas_cumprod = scheduler.alphas_cumprod.float()
    labels = torch.as_tensor(labels, dtype=torch.long)
    unet.train()
    text_encoder.train()
    start, running = time.perf_counter(), []
    for step in range(hp["steps"]):
        idx = torch.randint(0, len(latents), (hp["batch_size"],), generator=gen)
        z0 = latents[idx]
        drop = torch.rand(len(idx), generator=gen) < hp["prompt_dropout"]
        prompt_idx = torch.where(drop, torch.full_like(idx, 10), labels[idx])
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(idx),), generator=gen)
        noise = torch.randn(z0.shape, generator=gen)
        ab = alphas_cumprod[t].view(-1, 1, 1, 1)
        zt = ab.sqrt() * z0 + (1 - ab).sqrt() * noise
        # The 11 prompts once, then picked by a one-hot product: indexing's backward (index_put with
        # accumulation) sums in a thread-dependent order on CPU, a matmul does not.
        emb = text_encoder(ids)[0]
        cond = (nn.functional.one_hot(prompt_idx, len(prompts)).to(emb.dtype) @ emb.flatten(1)).view(-1, *emb.shape[1:])
        pred = unet(zt, t, encoder_hidden_states=cond).sample
        loss = (pred - noise).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, hp["grad_clip"])
        opt.step()
        sched.step()
        decay = min(hp["ema_decay"], (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_mul_(ema_params, decay)
            torch._foreach_add_(ema_params, [p.detach() for p in params], alpha=1 - decay)
        running.append(loss.item())
        if (step + 1) % 250 == 0 or step + 1 == hp["steps"]:
            log(f"  unet step {step + 1}/{hp['steps']}: loss {np.mean(running):.4f} ({time.perf_counter() - start:.0f} s)")
            running = []
    return ema_unet.eval(), ema_text.eval()


# 3. Checks -----------------------------------------------------------------------------------------


def generate_per_class(model, per_class: int, guidance: float, steps: int, seed: int) -> dict[int, list]:
    """``per_class`` images of every digit from the same N(0, I) seeds (seeded), DDIM, the digit's prompt."""
    from normguide.diffusion import generate_images

    seeds = torch.randn(per_class, *model.seed_shape, generator=torch.Generator().manual_seed(seed))
    out = {}
    for c in range(10):
        out[c] = [im for batch in generate_images(model, seeds, D.prompt_for(c), num_inference_steps=steps,
                                                  guidance_scale=guidance, batch_size=per_class,
                                                  batch_invariant=False) for im in batch]
    return out


def contact_sheet(rows: list[list], *, scale: int = 2, gap: int = 2, background=(90, 90, 90)):
    """A grid image: ``rows`` of equally sized PIL images, each scaled up by ``scale``."""
    from PIL import Image

    w, h = rows[0][0].size
    w, h = w * scale, h * scale
    ncol = max(len(r) for r in rows)
    sheet = Image.new("RGB", (ncol * (w + gap) + gap, len(rows) * (h + gap) + gap), background)
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            sheet.paste(im.convert("RGB").resize((w, h), Image.Resampling.NEAREST), (gap + j * (w + gap), gap + i * (h + gap)))
    return sheet


def _versions() -> dict:
    import diffusers
    import sklearn
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__,
            "machine": platform.machine(), "processor": platform.processor() or "unknown"}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) else value
    return out


def _markdown(record: dict) -> str:
    hp, t, r = record["hparams"], record["times_s"], record["results"]
    lines = [
        "# The shipped demo model: how it was trained",
        "",
        "Written by `python scripts/train_demo.py` (rerunning it rewrites this file; `train.log` is the",
        "run's log, when kept). A small",
        "Stable-Diffusion-architecture text-to-image model trained from scratch on scikit-learn's",
        "handwritten digits (8 x 8 px, upsampled to 32 x 32 RGB, white on black): a digits model, not a",
        "photo model. Prompts: `a handwritten digit <name>`.",
        "",
        f"- Command: `{record['command']}`; seed {hp['seed']}, {hp['threads']} CPU threads.",
        f"- Versions: {', '.join(f'{k} {v}' for k, v in record['versions'].items())}.",
        f"- Data split (seed {record['split']['seed']}, fingerprint `{record['split']['fingerprint']}`): "
        + "; ".join(f"{k} {v['total']}" for k, v in record["split"]["sizes"].items())
        + f". Rare digits {record['split']['rare_classes']} keep {record['split']['rare_train_per_class']}"
        " training images each in the generative split.",
        "  Per class (0-9): " + "; ".join(f"{k} {v['per_class']}" for k, v in record["split"]["sizes"].items()) + ".",
        (f"- Parameters: VAE {record['parameters']['vae']:,}, UNet {record['parameters']['unet']:,}, text encoder "
         f"{record['parameters']['text_encoder']:,}, classifier {record['parameters']['classifier']:,}. Pipeline files "
         f"{record['sizes_bytes']['pipeline'] / 2**20:.2f} MiB, classifier "
         f"{record['sizes_bytes']['classifier'] / 2**20:.2f} MiB."),
        f"- VAE scaling factor {record['vae_scaling_factor']:.4f} (1 / std of the training latents).",
        "",
        "## Times (seconds)",
        "",
        "Wall clock, and this process's CPU time over all its threads (on an idle machine CPU / threads ≈",
        "wall; under other people's load both grow).",
        "",
        "| part | wall s | CPU s |",
        "| --- | ---: | ---: |",
        *[f"| {k} | {v:.1f} | {record['cpu_times_s'][k]:.1f} |" for k, v in t.items()],
        "",
        "## Results",
        "",
        (f"- Classifier, held-out test split ({r['classifier_test_n']} real digits): accuracy "
         f"{r['classifier_test_accuracy']:.4f}; on 200 uniform-noise images: mean top probability "
         f"{r['classifier_noise_mean_max_proba']:.3f}, counted as a digit {r['classifier_noise_recognised']:.3f}."),
        (f"- VAE reconstructions of the held-out test split: MSE {r['vae_test_mse']:.5f} (pixels in [-1, 1]); "
         f"classifier accuracy on them {r['vae_test_reconstruction_accuracy']:.4f}."),
        (f"- Generation from random seeds ({hp['eval']['per_class']} per digit, same seeds for every digit, "
         f"{hp['eval']['num_inference_steps']} DDIM steps), share classified as the prompted digit "
         "(classifier `predict`, top probability >= 0.5):"),
        "",
        "| guidance | " + " | ".join(str(c) + ("*" if c in D.RARE_CLASSES else "") for c in range(10)) + " | common | rare |",
        "| --- | " + " | ".join("---:" for _ in range(12)) + " |",
    ]
    for g, acc in r["generation_accuracy"].items():
        lines.append(f"| {g} | " + " | ".join(f"{acc['per_class'][str(c)]:.2f}" for c in range(10))
                     + f" | {acc['common']:.3f} | {acc['rare']:.3f} |")
    lines += ["", "`*` rare digit. `samples.png`: one row per digit, left half guidance 1, right half guidance 3.", "",
              "## Hyper-parameters", "", "```json", json.dumps(hp, indent=2), "```", ""]
    return "\n".join(lines)


# 4. The script -------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="scripts/train_demo.py", description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="output directory (e.g. normguide/demo/weights)")
    parser.add_argument("--seed", type=int, default=HPARAMS["seed"])
    parser.add_argument("--threads", type=int, default=HPARAMS["threads"])
    parser.add_argument("--smoke", action="store_true", help="a few steps of everything: checks the script, not the model")
    parser.add_argument("--only", choices=["features"], default=None,
                        help="train only this part: 'features' (the refinement feature model, <out>/features)")
    args = parser.parse_args(argv)
    if args.only == "features":
        return train_features_step(args.out, seed=args.seed, threads=args.threads, smoke=args.smoke)

    from diffusers import StableDiffusionPipeline

    from normguide.demo.classifier import images_to_tensor, train_classifier
    from normguide.diffusion.demo import build_demo_tokenizer, demo_tokenizer_files
    from normguide.diffusion.loading import load_pipeline

    hp = _merge(HPARAMS, SMOKE) if args.smoke else copy.deepcopy(HPARAMS)
    hp["seed"], hp["threads"] = args.seed, args.threads
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(hp["flush_denormal"])
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    times: dict[str, float] = {}
    cpu_times: dict[str, float] = {}
    cpu_start = [time.process_time()]

    def log(msg: str) -> None:
        print(msg, flush=True)

    def timed(name: str, t0: float) -> None:
        # Wall clock, and this process's CPU time (all threads): on a shared machine the wall clock
        # grows with other people's load, CPU time / threads is what the part costs alone.
        times[name] = time.perf_counter() - t0
        cpu_times[name] = time.process_time() - cpu_start[0]
        cpu_start[0] = time.process_time()
        log(f"[{name}] {times[name]:.1f} s wall, {cpu_times[name]:.1f} s CPU")

    # 1. Data
    t0 = time.perf_counter()
    splits = {name: D.load_split(name) for name in D.SPLITS}
    x_gen = splits["generative"].tensor()
    x_test = splits["test"].tensor()
    judge_x, test_x = images_to_tensor(splits["judge"].images()), images_to_tensor(splits["test"].images())
    timed("data", t0)

    # 2. Classifier (the judge)
    t0 = time.perf_counter()
    torch.manual_seed(hp["seed"])
    clf = train_classifier(judge_x, splits["judge"].labels, seed=hp["seed"], log=log, **hp["classifier"])
    timed("classifier", t0)
    clf_acc = float((clf.predict(test_x) == splits["test"].labels).mean())
    noise_gen = torch.Generator().manual_seed(hp["seed"] + 7)
    noise = torch.rand(200, 1, 32, 32, generator=noise_gen)
    noise_proba = clf.predict_proba(noise)
    log(f"  classifier held-out test accuracy {clf_acc:.4f}; noise mean top probability {noise_proba.max(1).mean():.3f}")
    clf.save(out / "classifier")

    # 3. VAE
    t0 = time.perf_counter()
    torch.manual_seed(hp["seed"] + 1)
    gen = torch.Generator().manual_seed(hp["seed"] + 1)
    vae = train_vae(x_gen, hp["vae"], gen, log)
    means = encode_means(vae, x_gen)
    scaling = float(1.0 / means.std())
    vae.register_to_config(scaling_factor=scaling)
    latents = means * scaling
    timed("vae", t0)
    rec = reconstruct(vae, x_test)
    vae_mse = float((rec - x_test).pow(2).mean())
    rec_images = [im for im in _tensor_to_pil(rec)]
    vae_rec_acc = float((clf.predict(rec_images) == splits["test"].labels).mean())
    log(f"  vae scaling factor {scaling:.4f}; test reconstruction mse {vae_mse:.5f}, classifier accuracy on them {vae_rec_acc:.4f}")

    # 4. Text encoder + UNet
    t0 = time.perf_counter()
    tokenizer = build_demo_tokenizer(PROMPT_WORDS)
    for word in PROMPT_WORDS:  # every prompt word is one token (bos, word, eos)
        if len(tokenizer(word).input_ids) != 3:
            raise AssertionError(f"tokenizer splits {word!r}")
    torch.manual_seed(hp["seed"] + 2)
    text_encoder = build_text_encoder(hp["text_encoder"], len(tokenizer))
    unet = build_unet(hp["unet"], hp["text_encoder"]["hidden_size"], latents.shape[-1], latents.shape[1])
    scheduler = build_scheduler(hp["scheduler"])
    gen = torch.Generator().manual_seed(hp["seed"] + 2)
    unet, text_encoder = train_denoiser(latents, splits["generative"].labels, tokenizer, text_encoder, unet,
                                        scheduler, hp["unet"], gen, log)
    timed("unet_and_text_encoder", t0)
    times["total_training"] = sum(times.values())
    cpu_times["total_training"] = sum(cpu_times.values())
    log(f"[total training] {times['total_training']:.1f} s wall, {cpu_times['total_training']:.1f} s CPU")

    # 5. Save the pipeline, reload it through the product's loader
    t0 = time.perf_counter()
    cpu_start[0] = time.process_time()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    pipe.save_pretrained(out / "pipeline", safe_serialization=True)
    # transformers 5 saves only tokenizer.json; 4.x's (slow) CLIPTokenizer needs vocab.json + merges.txt.
    vocab, merges = demo_tokenizer_files(PROMPT_WORDS)
    tok_dir = out / "pipeline" / "tokenizer"
    (tok_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (tok_dir / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    model = load_pipeline(str(out / "pipeline"))

    # 6. Generation accuracy per digit, contact sheet
    ev = hp["eval"]
    gen_acc, sheets = {}, {}
    for g in ev["guidance"]:
        images = generate_per_class(model, ev["per_class"], g, ev["num_inference_steps"], ev["seed"])
        per_class = {str(c): float((clf.predict(images[c]) == c).mean()) for c in range(10)}
        gen_acc[str(g)] = {
            "per_class": per_class,
            "common": float(np.mean([per_class[str(c)] for c in D.COMMON_CLASSES])),
            "rare": float(np.mean([per_class[str(c)] for c in D.RARE_CLASSES])),
        }
        sheets[g] = [images[c][: ev["sheet_per_row"]] for c in range(10)]
        log(f"  generation accuracy at guidance {g}: " + " ".join(f"{c}:{per_class[str(c)]:.2f}" for c in range(10)))
    rows = [sheets[ev["guidance"][0]][c] + sheets[ev["guidance"][-1]][c] for c in range(10)]
    contact_sheet(rows).save(out / "samples.png")
    timed("save_and_evaluate", t0)

    # 7. Record
    def size(path: Path) -> int:
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())

    record = {
        "command": "python scripts/train_demo.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "smoke": args.smoke,
        "hparams": hp,
        "versions": _versions(),
        "split": {
            "seed": D.SPLIT_SEED,
            "fingerprint": D.split_fingerprint(),
            "rare_classes": list(D.RARE_CLASSES),
            "rare_train_per_class": D.RARE_TRAIN_PER_CLASS,
            "heldout_fraction": D.HELDOUT_FRACTION,
            "reference_per_class": D.REFERENCE_PER_CLASS,
            "sizes": {n: {"total": len(s), "per_class": np.bincount(s.labels, minlength=10).tolist()} for n, s in splits.items()},
        },
        "parameters": {
            "vae": sum(p.numel() for p in vae.parameters()),
            "unet": sum(p.numel() for p in unet.parameters()),
            "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
            "classifier": sum(p.numel() for p in clf.net.parameters()),
        },
        "sizes_bytes": {"pipeline": size(out / "pipeline"), "classifier": size(out / "classifier")},
        "vae_scaling_factor": scaling,
        "times_s": {k: round(v, 1) for k, v in times.items()},
        "cpu_times_s": {k: round(v, 1) for k, v in cpu_times.items()},
        "results": {
            "classifier_test_accuracy": clf_acc,
            "classifier_test_n": len(splits["test"]),
            "classifier_noise_mean_max_proba": float(noise_proba.max(1).mean()),
            "classifier_noise_recognised": float((noise_proba.max(1) >= 0.5).mean()),
            "vae_test_mse": vae_mse,
            "vae_test_reconstruction_accuracy": vae_rec_acc,
            "generation_accuracy": gen_acc,
        },
    }
    (out / "TRAINING.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    (out / "TRAINING.md").write_text(_markdown(record), encoding="utf-8")
    log(f"wrote {out} (pipeline {record['sizes_bytes']['pipeline'] / 2**20:.2f} MiB)")
    train_features_step(out, seed=args.seed, threads=args.threads, smoke=args.smoke)
    return record


def train_features_step(out: Path, *, seed: int = 0, threads: int = 2, smoke: bool = False) -> dict:
    """Train the refinement feature model (``normguide.demo.features``) on the ``"judge"`` split's
    images (no labels) and write ``<out>/features`` (model.safetensors, config.json,
    TRAINING.json) and nothing else. Deterministic from ``seed`` on one machine and thread count."""
    from normguide.demo.classifier import images_to_tensor
    from normguide.demo.features import train_features

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    hp = dict(FEATURES_HPARAMS, **({"epochs": 1} if smoke else {}))
    t0, c0 = time.perf_counter(), time.process_time()
    x = images_to_tensor(D.load_split("judge").images())
    feats = train_features(x, seed=seed, log=lambda m: print(m, flush=True), **hp)
    test = images_to_tensor(D.load_split("test").images())
    with torch.no_grad():
        test_mse = float(nn.functional.mse_loss(torch.sigmoid(feats.autoencoder(test)), test))
    feats.save(Path(out) / "features")
    record = {
        "command": f"python scripts/train_demo.py --out {out} --only features" + (" --smoke" if smoke else ""),
        "what": "refinement feature model: denoising autoencoder on the 'judge' split's images (no labels)",
        "hparams": hp, "seed": seed, "threads": threads, "versions": _versions(),
        "split_fingerprint": D.split_fingerprint(), "train_images": len(x),
        "parameters": sum(p.numel() for p in feats.autoencoder.parameters()),
        "results": {"test_reconstruction_mse": test_mse},
        "time_s": round(time.perf_counter() - t0, 1), "cpu_time_s": round(time.process_time() - c0, 1),
    }
    (Path(out) / "features" / "TRAINING.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"  features: held-out test reconstruction mse {test_mse:.5f}; wrote {Path(out) / 'features'}", flush=True)
    return record


def _tensor_to_pil(x: torch.Tensor) -> list:
    from PIL import Image

    arr = ((x.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


if __name__ == "__main__":
    main()
