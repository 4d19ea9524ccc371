"""Benchmark (GPU): full-size SD 1.5 at 512 px, SDXL, SD 3.5 Medium and FLUX.1-dev at 1024 px,
random weights; fp16 for SD 1.5/SDXL, bf16 for SD3/FLUX (their dtype policy: docs/models.md).

    .venv/bin/python benchmarks/gpu_throughput.py [--models sd15 sdxl sd3 flux] [--batch-sizes 1 8 16]
        [--steps 50] [--repeats 3] [--compile] [--device cuda] [--tiny]

``--tiny``: the same rows on the tiny ``demo:<family>`` builds (CPU allowed): a smoke test of the
script, not a measurement. SD3 (MMDiT, 24 layers, two CLIP encoders and a T5-XXL encoder) runs
classifier-free guidance 7.0; FLUX (19 double + 38 single blocks, CLIP + T5-XXL) embeds guidance
3.5 (one pass per step) and takes packed latents; both sample with FlowMatchEuler.

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


def _t5xxl(vocab_size: int):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=4096, d_ff=10240, d_kv=64, num_layers=24,
                                   num_heads=64, feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))


def _flow_vae(scaling: float, shift: float):
    from diffusers import AutoencoderKL

    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2,
                         block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                         up_block_types=("UpDecoderBlock2D",) * 4, sample_size=1024, scaling_factor=scaling,
                         shift_factor=shift, use_quant_conv=False, use_post_quant_conv=False, force_upcast=True)


def _clip_l(tok, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cls = CLIPTextModelWithProjection if projection else CLIPTextModel
    return cls(CLIPTextConfig(vocab_size=len(tok), hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                              num_hidden_layers=12, hidden_act="quick_gelu", projection_dim=768,
                              max_position_embeddings=77, bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1,
                              pad_token_id=len(tok) - 1))


def _flow_pipeline(model: str):
    """SD 3.5 Medium / FLUX.1-dev sized, random weights (their published transformer configs)."""
    from diffusers import (FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel,
                           SD3Transformer2DModel, StableDiffusion3Pipeline)
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    from normguide.diffusion.demo import build_demo_t5_tokenizer, build_demo_tokenizer

    tok, t5_tok = build_demo_tokenizer(), build_demo_t5_tokenizer()
    t5_tok.model_max_length = 256 if model == "sd3" else 512
    if model == "flux":
        transformer = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                                             attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                                             pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=[16, 56, 56])
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
        return FluxPipeline(scheduler=sched, vae=_flow_vae(0.3611, 0.1159), text_encoder=_clip_l(tok, False),
                            tokenizer=tok, text_encoder_2=_t5xxl(len(t5_tok)), tokenizer_2=t5_tok,
                            transformer=transformer)
    transformer = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=24,
                                        attention_head_dim=64, num_attention_heads=24, joint_attention_dim=4096,
                                        caption_projection_dim=1536, pooled_projection_dim=2048, out_channels=16,
                                        pos_embed_max_size=384, qk_norm="rms_norm", dual_attention_layers=tuple(range(13)))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig(vocab_size=len(tok), hidden_size=1280, intermediate_size=5120,
                                                     num_attention_heads=20, num_hidden_layers=32, hidden_act="gelu",
                                                     projection_dim=1280, max_position_embeddings=77,
                                                     bos_token_id=len(tok) - 2, eos_token_id=len(tok) - 1,
                                                     pad_token_id=len(tok) - 1))
    return StableDiffusion3Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=_flow_vae(1.5305, 0.0609),
                                    text_encoder=_clip_l(tok, True), tokenizer=tok, text_encoder_2=te2,
                                    tokenizer_2=tok, text_encoder_3=_t5xxl(len(t5_tok)), tokenizer_3=t5_tok,
                                    transformer=transformer)


#: Guidance per model: CFG 7.5 (SD), 7.0 (SD3), embedded 3.5 (FLUX-dev).
GUIDANCE = {"sd15": 7.5, "sdxl": 7.5, "sd3": 7.0, "flux": 3.5}
DTYPE = {"sd15": torch.float16, "sdxl": torch.float16, "sd3": torch.bfloat16, "flux": torch.bfloat16}


def build(model: str, device: str, tiny: bool = False):
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    if tiny:
        from normguide.diffusion.families import for_name

        name = {"sd15": "sd1"}.get(model, model)
        pipe = for_name(name).build_demo(name)
        pipe.set_progress_bar_config(disable=True)
        return pipe
    if model in ("sd3", "flux"):
        with torch.device(device):
            torch.manual_seed(0)
            pipe = _flow_pipeline(model)
        pipe.to(DTYPE[model])
        pipe.set_progress_bar_config(disable=True)
        return pipe

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
    ap.add_argument("--models", nargs="+", default=["sd15", "sdxl", "sd3", "flux"], choices=["sd15", "sdxl", "sd3", "flux"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 16])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the tiny demo builds (a smoke test; CPU allowed)")
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and args.device.startswith("cuda")
    if not cuda and not args.tiny:
        raise SystemExit("gpu_throughput.py needs a CUDA device; see benchmarks/pipeline_throughput.py for CPU")
    import copy

    from normguide.diffusion import from_pipeline, generate_images, warm_up
    from normguide.diffusion.families import for_model

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    where = torch.cuda.get_device_name() if cuda else "CPU (--tiny smoke test)"
    print(f"{where}, fp16 (SD) / bf16 (SD3, FLUX), {args.steps} steps, guidance {GUIDANCE}, median of {args.repeats}")
    print(f"{'model':<6} {'batch':>5} {'implementation':<26} {'images/s':>9} {'vs bare':>8} {'peak GiB':>9}  fallbacks")
    for name in args.models:
        dtype = torch.float32 if args.tiny else DTYPE[name]
        bare = build(name, args.device, args.tiny)
        ours = {"normguide": from_pipeline(bare, model_id=name, revision="random", device=args.device, dtype=dtype)}
        bare = build(name, args.device, args.tiny)  # from_pipeline converted the first one (channels_last, DDIM config)
        bare.to(args.device)
        family = for_model(ours["normguide"])
        extra = {}
        if name in ("sd3", "flux"):
            res = ours["normguide"].resolution
            extra = {"height": res, "width": res, "max_sequence_length": family.max_sequence_length(bare)}
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
                                                         guidance_scale=GUIDANCE[name], batch_size=b)]
                fallbacks[key] = sum(fb is not None for batch in out for fb in batch.precision_fallback)

            latents = family.pack(seeds, m0).to(args.device, dtype)  # FLUX: packed, as its pipeline takes them
            rows = {"bare diffusers": lambda latents=latents, b=b, extra=extra: bare(
                prompt=[PROMPT] * b, latents=latents, num_inference_steps=args.steps,
                guidance_scale=GUIDANCE[name], output_type="pil", **extra)}
            for key, m in ours.items():
                if m.compiled and name not in ("sd3", "flux"):  # ddim.warm_up knows the SD families only
                    warm_up(m, batch_size=b)
                rows[key] = lambda m=m, key=key: run_ours(m, key=key)
            for fn in rows.values():
                fn()
            secs: dict = {k: [] for k in rows}
            peak: dict = {k: [] for k in rows}
            for _ in range(args.repeats):
                for key, fn in rows.items():
                    sync()
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    t0 = time.perf_counter()
                    fn()
                    sync()
                    secs[key].append(time.perf_counter() - t0)
                    peak[key].append(torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0)
            base = b / statistics.median(secs["bare diffusers"])
            for key in rows:
                ips = b / statistics.median(secs[key])
                print(f"{name:<6} {b:>5} {key:<26} {ips:>9.3f} {ips / base:>7.2f}x {statistics.median(peak[key]):>9.2f}"
                      f"  {fallbacks.get(key, '-')}", flush=True)
        bare = ours = None  # free the GPU memory before the next model
        if cuda:
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
