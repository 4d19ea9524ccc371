"""Benchmark (GPU): full-size SD 1.5 at 512 px and SDXL at 1024 px, random weights, fp16.

    .venv/bin/python benchmarks/gpu_throughput.py [--models sd15 sdxl] [--batch-sizes 1 8 16]
        [--steps 50] [--repeats 3] [--compile] [--device cuda]

Needs a CUDA GPU (an H100 or H200 holds SDXL at batch 16 in fp16); nothing is downloaded: every
component is built from its published config (UNet, VAE, CLIP text encoders; the tokenizer is the
demo's, offline) with random weights, so the numbers are the architectures' cost, not image quality.
For each model and batch size, side by side in one process, each repeat running every row once:

- bare diffusers: ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline.__call__`` with the
  seeds as ``latents``, DDIM, guidance 7.5, ``output_type="pil"``;
- normguide: ``generate_images`` on the same components (fp16 UNet, channels_last, SDPA, CFG in one
  pass, VAE slicing, pinned transfers, per-sample checks), and with ``--compile`` a second,
  ``torch.compile``d copy (warmed up once per batch size, last batch padded).

Prints images/s, the ratio to bare diffusers and peak allocated GPU memory (GiB). Goal: >= 1.3x
bare diffusers. Random weights: a per-sample check may flag a VAE output as constant; the row then
reports the fallbacks it took (they cost time and count against normguide).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

PROMPT = "a photo of an astronaut riding a horse"


def _sd15_components(device):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from normguide.diffusion.demo import build_demo_tokenizer

    tok = build_demo_tokenizer()
    unet = UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768, attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    )
    vae = _vae(512, 0.18215, force_upcast=False)  # SD 1.5's VAE runs in fp16 in diffusers' pipeline
    te = CLIPTextModel(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072,
                                      num_attention_heads=12, num_hidden_layers=12, max_position_embeddings=77,
                                      hidden_act="quick_gelu", bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1,
                                      pad_token_id=len(tok) - 1))
    return dict(unet=unet, vae=vae, text_encoder=te, tokenizer=tok)


def _vae(size, scaling, force_upcast=True):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
                         block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, sample_size=size, scaling_factor=scaling,
                         force_upcast=force_upcast)


def _sdxl_components(device):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from normguide.diffusion.demo import build_demo_tokenizer

    tok = build_demo_tokenizer()
    common = dict(vocab_size=len(tok), max_position_embeddings=77, bos_token_id=len(tok) - 2,
                  eos_token_id=len(tok) - 1, pad_token_id=len(tok) - 1)
    te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                      num_hidden_layers=12, hidden_act="quick_gelu", **common))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=1280, intermediate_size=5120, num_attention_heads=20,
                                                     num_hidden_layers=32, hidden_act="gelu", projection_dim=1280,
                                                     **common))
    unet = UNet2DConditionModel(
        sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 2, 10), attention_head_dim=(5, 10, 20), cross_attention_dim=2048,
        use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
        projection_class_embeddings_input_dim=2816,
    )
    # SDXL's VAE overflows in fp16: its config sets force_upcast
    return dict(unet=unet, vae=_vae(1024, 0.13025), text_encoder=te, text_encoder_2=te2, tokenizer=tok,
                tokenizer_2=tok)


def build(model: str, device: str):
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    sched = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                          clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    with torch.device(device):
        torch.manual_seed(0)
        if model == "sd15":
            pipe = StableDiffusionPipeline(**_sd15_components(device), scheduler=sched, safety_checker=None,
                                           feature_extractor=None, requires_safety_checker=False)
        else:
            pipe = StableDiffusionXLPipeline(**_sdxl_components(device), scheduler=sched, add_watermarker=False)
    pipe.to(torch.float16)  # SDXL's pipeline upcasts its VAE itself at each decode (force_upcast)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["sd15", "sdxl"], choices=["sd15", "sdxl"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_throughput.py needs a CUDA device; see benchmarks/pipeline_throughput.py for CPU")
    import copy

    from normguide.diffusion import from_pipeline, generate_images, warm_up

    print(f"{torch.cuda.get_device_name()}, fp16, DDIM {args.steps} steps, guidance 7.5, median of {args.repeats}")
    print(f"{'model':<6} {'batch':>5} {'implementation':<26} {'images/s':>9} {'vs bare':>8} {'peak GiB':>9}  fallbacks")
    for name in args.models:
        bare = build(name, args.device)
        ours = {"normguide": from_pipeline(bare, model_id=name, revision="random", device=args.device,
                                           dtype=torch.float16)}
        bare = build(name, args.device)  # from_pipeline converted the first one (channels_last, DDIM config)
        if args.compile:
            ours["normguide, compiled"] = from_pipeline(copy.deepcopy(ours["normguide"].pipe), model_id=name,
                                                        revision="random", device=args.device, dtype=torch.float16,
                                                        compile=True)
        for b in args.batch_sizes:
            m0 = ours["normguide"]
            seeds = torch.randn(b, *m0.seed_shape, generator=torch.Generator().manual_seed(0))
            fallbacks: dict = {}

            def run_ours(m, seeds=seeds, b=b, key=None):
                out = [batch for batch in generate_images(m, seeds, PROMPT, num_inference_steps=args.steps,
                                                         batch_size=b)]
                fallbacks[key] = sum(fb is not None for batch in out for fb in batch.precision_fallback)

            rows = {"bare diffusers": lambda seeds=seeds, b=b: bare(
                prompt=[PROMPT] * b, latents=seeds.to(args.device, torch.float16), num_inference_steps=args.steps,
                guidance_scale=7.5, output_type="pil")}
            for key, m in ours.items():
                if m.compiled:
                    warm_up(m, batch_size=b)
                rows[key] = lambda m=m, key=key: run_ours(m, key=key)
            for fn in rows.values():
                fn()
            secs: dict = {k: [] for k in rows}
            peak: dict = {k: [] for k in rows}
            for _ in range(args.repeats):
                for key, fn in rows.items():
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    t0 = time.perf_counter()
                    fn()
                    torch.cuda.synchronize()
                    secs[key].append(time.perf_counter() - t0)
                    peak[key].append(torch.cuda.max_memory_allocated() / 2**30)
            base = b / statistics.median(secs["bare diffusers"])
            for key in rows:
                ips = b / statistics.median(secs[key])
                print(f"{name:<6} {b:>5} {key:<26} {ips:>9.3f} {ips / base:>7.2f}x {statistics.median(peak[key]):>9.2f}"
                      f"  {fallbacks.get(key, '-')}", flush=True)
        bare = ours = None  # free the GPU memory before the next model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
