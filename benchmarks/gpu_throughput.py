"""Benchmark (GPU): full-size SD 1.5 at 512 px, SDXL, SD 3.5 Medium and FLUX.1-dev at 1024 px,
random weights; fp16 for SD 1.5/SDXL, bf16 for SD3/FLUX (their dtype policy: docs/models.md).

    .venv/bin/python benchmarks/gpu_throughput.py            # one command, <= ~10 min on one H200
    .venv/bin/python benchmarks/gpu_throughput.py [--models sd15 sdxl sd3 flux] [--batch-sizes 1 8 32]
        [--steps 30] [--repeats 3] [--compile] [--compile-mode max-autotune] [--compile-vae] [--fuse-qkv]
        [--tf32] [--cudnn-benchmark] [--batch-across-concepts] [--budget-s 570] [--device cuda] [--tiny]

``--tiny``: the same rows on the tiny ``demo:<family>`` builds (CPU allowed): a smoke test of the
script (< 2 min on CPU), not a measurement. SD3 runs classifier-free guidance 7.0; FLUX embeds
guidance 3.5 (one pass per step) and takes packed latents; both sample with FlowMatchEuler.

Needs a CUDA GPU; nothing is downloaded: every component is built from its published config
(UNet/transformer, VAE, CLIP/T5 text encoders; the tokenizers are the demo's, offline) with random
weights, so the numbers are the architectures' cost, not image quality. The SD 1.5 VAE is built
with ``force_upcast=True``, as ``runwayml/stable-diffusion-v1-5`` loads (its vae/config.json
predates the key, so diffusers applies AutoencoderKL's default, True); SDXL's config sets it.

For each model one pipeline is built once and run by each implementation in turn (one resident
at a time, so each row's peak memory is that implementation's own: weights + working memory,
``torch.cuda.reset_peak_memory_stats`` before and ``max_memory_allocated`` after its calls):

1. ``bare diffusers``: ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` /
   ``StableDiffusion3Pipeline`` / ``FluxPipeline.__call__`` as diffusers runs it out of the box
   (SDPA; SD 1.5 decodes in fp16 whatever ``force_upcast`` says, SDXL upcasts its VAE per call);
2. ``bare diffusers + same optimisations``: the same call after exactly what normguide does to the
   pipeline: channels_last UNet/VAE on CUDA, the VAE kept in fp32 where normguide keeps it (both
   SD VAEs at fp16: ``force_upcast``), and with the recipe flags the same ``torch.compile``
   (mode, VAE decoder) and fused QKV;
3. ``normguide``: ``generate_images`` (batched default; CFG in one pass, per-sample checks);
4. with ``--compile``: ``normguide, compiled`` (row 2 is then compiled too);
5. SD 1.5 only: ``normguide, gpu.vae_half``: the VAE decoder in fp16 as diffusers runs SD 1.5;
6. with ``--batch-across-concepts``: ``normguide, a prompt per row``: every row of a batch with a
   prompt of its own, as ``generation.batch_across_concepts`` fills a batch from several concepts
   (its images differ from row 1's by prompt, so no comparison is printed).

Every implementation gets one untimed call per batch size first (compilation, cuDNN autotuning),
then ``--repeats`` timed calls; the table gives the median images/s, the ratio to row 1, the peak
GiB, the precision fallbacks normguide took, and the images of the last call against row 1's at
the same seeds: max abs pixel difference (0-255) and PSNR (dB; inf = identical bytes).

``--budget-s`` keeps the whole run inside one device session: each model gets an equal share of
what is left; a (row, batch) projected to overrun its share (from the previous batch size or row,
plus a compile allowance) is printed as "not run (budget)" instead of being run.
"""

from __future__ import annotations

import argparse
import os
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
    vae = _vae(512, 0.18215, force_upcast=True)  # as the real SD 1.5 VAE loads (AutoencoderKL's default)
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


def _images(out) -> list:
    import numpy as np

    return [np.asarray(im.convert("RGB"), dtype=np.uint8) for im in out]


def _compare(ours: list, base: list) -> str:
    """Max abs pixel difference and PSNR of ``ours`` against ``base`` (uint8 arrays, same seeds)."""
    import numpy as np

    if not ours or not base or len(ours) != len(base):
        return "-"
    a = np.stack(ours).astype(np.float64)
    b = np.stack(base).astype(np.float64)
    mse = float(((a - b) ** 2).mean())
    psnr = float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)
    return f"{int(np.abs(a - b).max()):>3} / {psnr:6.1f}"


#: Seconds allowed for a compilation when projecting a compiled row's first call per batch size.
COMPILE_ALLOWANCE_S = 120.0
#: Batch sizes per model by default: batch 32 where a call of it fits the budget (SD 1.5, SDXL).
DEFAULT_BATCHES = {"sd15": (1, 8, 32), "sdxl": (1, 8, 32), "sd3": (1, 4), "flux": (1,)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["sd15", "sdxl", "sd3", "flux"], choices=["sd15", "sdxl", "sd3", "flux"])
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=None,
                    help=f"default per model: {DEFAULT_BATCHES}")
    ap.add_argument("--steps", type=int, default=None, help="default 30 (--tiny: 2)")
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (--tiny: 1)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the UNet/transformer (rows 2 and 4)")
    ap.add_argument("--compile-mode", default="default",
                    choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"])
    ap.add_argument("--compile-backend", default="inductor", help="torch.compile backend ('eager': a CPU smoke test)")
    ap.add_argument("--compile-vae", action="store_true", help="also compile the VAE decoder (rows 2 and 4)")
    ap.add_argument("--fuse-qkv", action="store_true", help="fused QKV projections (rows 2, 3, 4)")
    ap.add_argument("--tf32", action="store_true", help="TF32 float32 matmuls (process-wide: every row)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="cuDNN autotuning (process-wide: every row)")
    ap.add_argument("--budget-s", type=float, default=570.0, help="wall-clock budget of the whole run")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the tiny demo builds (a smoke test; CPU allowed)")
    ap.add_argument("--batch-across-concepts", action="store_true",
                    help="add a row: normguide with a different prompt per row, as generation.batch_across_concepts "
                         "fills a batch from several concepts (one encoding per prompt, per-row conditioning)")
    args = ap.parse_args()
    args.steps = args.steps or (2 if args.tiny else 30)
    args.repeats = args.repeats or (1 if args.tiny else 3)
    if args.tiny and not args.batch_sizes:
        args.batch_sizes = [1, 2]
    t_start = time.perf_counter()
    cuda = torch.cuda.is_available() and args.device.startswith("cuda")
    if not cuda and not args.tiny:
        raise SystemExit("gpu_throughput.py needs a CUDA device; see benchmarks/pipeline_throughput.py for CPU")

    from normguide.diffusion import from_pipeline, generate_images
    from normguide.diffusion.families import for_class
    from normguide.diffusion.gpu_recipe import GpuRecipe, apply_process_flags, compile_kwargs

    recipe = GpuRecipe(compile_mode=args.compile_mode, compile_vae=args.compile_vae, fuse_qkv=args.fuse_qkv,
                       cudnn_benchmark=args.cudnn_benchmark, tf32=args.tf32)
    device = torch.device(args.device if cuda else "cpu")
    apply_process_flags(recipe, device)  # process-wide: the same for every row
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    where = torch.cuda.get_device_name() if cuda else "CPU (--tiny smoke test, not a measurement)"
    flags = [f for f, on in (("compile", args.compile), (f"compile_mode={args.compile_mode}", args.compile),
                             ("compile_vae", args.compile_vae), ("fuse_qkv", args.fuse_qkv), ("tf32", args.tf32),
                             ("cudnn_benchmark", args.cudnn_benchmark)) if on]
    load = os.getloadavg()
    print(f"{where}; torch {torch.__version__}; {'float32 (tiny builds)' if args.tiny else 'fp16 (SD) / bf16 (SD3, FLUX)'}; {args.steps} steps; guidance {GUIDANCE}; "
          f"median of {args.repeats} after 1 untimed call; recipe: {', '.join(flags) or 'none'}; host load "
          f"{load[0]:.1f}; budget {args.budget_s:.0f} s", flush=True)
    print(f"{'model':<6} {'batch':>5} {'implementation':<48} {'images/s':>9} {'vs bare':>8} {'peak GiB':>9} "
          f"{'fallbacks':>9}  {'max|diff| / PSNR dB vs bare':>27}", flush=True)

    for mi, name in enumerate(args.models):
        left = args.budget_s - (time.perf_counter() - t_start)
        deadline = time.perf_counter() + left / (len(args.models) - mi)
        if left < 30:
            print(f"{name:<6} not run (budget: {left:.0f} s left)", flush=True)
            continue
        dtype = torch.float32 if args.tiny else DTYPE[name]
        pipe = build(name, args.device, args.tiny)
        pipe.to(device)
        fam = for_class(type(pipe).__name__, where="the benchmark")
        _, seed_shape = fam.geometry(pipe)
        flow = name in ("sd3", "flux")
        extra = {}
        if flow:
            res = fam.geometry(pipe)[0]
            extra = {"height": res, "width": res, "max_sequence_length": fam.max_sequence_length(pipe)}
        batches = args.batch_sizes or DEFAULT_BATCHES[name]
        upcast = dtype == torch.float16 and pipe.vae.config.get("force_upcast", False)
        backend = args.compile_backend

        def bare_call(seeds, b):
            latents = fam.pack(seeds, None).to(device, dtype) if name == "flux" else seeds.to(device, dtype)
            out = pipe(prompt=[PROMPT] * b, latents=latents, num_inference_steps=args.steps,
                       guidance_scale=GUIDANCE[name], output_type="pil", **extra).images
            return _images(out), 0

        def optimise_bare():
            if cuda:  # what from_pipeline does on CUDA: the UNet (not a transformer) and the VAE
                if getattr(pipe, "unet", None) is not None:
                    pipe.unet.to(memory_format=torch.channels_last)
                pipe.vae.to(memory_format=torch.channels_last)
            if upcast:
                pipe.vae.to(torch.float32)  # resident, as normguide keeps it (no per-call upcast)
            if args.fuse_qkv:
                fam.denoiser(pipe).fuse_qkv_projections()
            if args.compile:
                fam.set_denoiser(pipe, torch.compile(fam.denoiser(pipe), **compile_kwargs(recipe, backend)))
            if args.compile_vae:
                pipe.vae.decoder = torch.compile(pipe.vae.decoder, **compile_kwargs(recipe, backend))

        def restore_bare():  # undo what normguide will redo itself (exactly: fp16 -> fp32 -> fp16 is lossless)
            den = fam.denoiser(pipe)
            fam.set_denoiser(pipe, getattr(den, "_orig_mod", den))
            pipe.vae.decoder = getattr(pipe.vae.decoder, "_orig_mod", pipe.vae.decoder)
            if args.fuse_qkv:
                fam.denoiser(pipe).unfuse_qkv_projections()
            if upcast:
                pipe.vae.to(dtype)
            if cuda:
                torch._dynamo.reset()

        current: dict = {}

        def ours_setup(compiled: bool, vae_half: bool = False):
            def setup():
                if "model" in current:  # undo the previous normguide row (compile, fusion, upcast VAE)
                    current.pop("model")._twins.clear()
                    if upcast:
                        pipe.vae.to(dtype)
                    den = fam.denoiser(pipe)
                    fam.set_denoiser(pipe, getattr(den, "_orig_mod", den))
                    pipe.vae.decoder = getattr(pipe.vae.decoder, "_orig_mod", pipe.vae.decoder)
                    if args.fuse_qkv:
                        fam.denoiser(pipe).unfuse_qkv_projections()
                r = GpuRecipe(compile_mode=args.compile_mode, compile_vae=args.compile_vae and compiled,
                              fuse_qkv=args.fuse_qkv, vae_half=vae_half)
                current["model"] = from_pipeline(pipe, model_id=name, revision="random", device=device, dtype=dtype,
                                                 compile=(True if backend == "inductor" else backend) if compiled
                                                 else False, recipe=r)
            return setup

        def ours_call(seeds, b):
            m = current["model"]
            out = list(generate_images(m, seeds, PROMPT, num_inference_steps=args.steps,
                                       guidance_scale=GUIDANCE[name], batch_size=b))
            return _images([im for batch in out for im in batch]), sum(
                fb is not None for batch in out for fb in batch.precision_fallback)

        def ours_rows_call(seeds, b):  # one prompt per row: a batch across b concepts
            m = current["model"]
            out = list(generate_images(m, seeds, [f"{PROMPT} {i}" for i in range(b)],
                                       num_inference_steps=args.steps, guidance_scale=GUIDANCE[name], batch_size=b))
            return _images([im for batch in out for im in batch]), sum(
                fb is not None for batch in out for fb in batch.precision_fallback)

        opt = "bare diffusers + same optimisations" + (" (compiled)" if args.compile else "")
        rows = [("bare diffusers", None, bare_call, False), (opt, optimise_bare, bare_call, args.compile),
                ("normguide", ours_setup(False), ours_call, False)]
        if args.compile:
            rows.append(("normguide, compiled", ours_setup(True), ours_call, True))
        if upcast and name == "sd15":
            rows.append(("normguide, gpu.vae_half", ours_setup(False, vae_half=True), ours_call, False))
        if args.batch_across_concepts:
            rows.append(("normguide, a prompt per row (across concepts)", ours_setup(False), ours_rows_call, False))
        base_ips: dict[int, float] = {}
        base_imgs: dict[int, list] = {}
        per_call: dict[tuple[str, int], float] = {}
        for ri, (label, setup, call, compiled) in enumerate(rows):
            if ri == 2:
                restore_bare()
            if setup is not None:
                setup()
            prev_b = None
            for b in batches:
                est = per_call.get((rows[ri - 1][0], b)) if ri else None
                if est is None and prev_b is not None and (label, prev_b) in per_call:
                    est = per_call[(label, prev_b)] * b / prev_b
                projected = (est or 0.0) * (args.repeats + 1) + (COMPILE_ALLOWANCE_S if compiled and cuda else 0.0)
                if est is not None and time.perf_counter() + projected > deadline:
                    print(f"{name:<6} {b:>5} {label:<48} not run (budget: projected {projected:.0f} s, "
                          f"{deadline - time.perf_counter():.0f} s left for {name})", flush=True)
                    continue
                seeds = torch.randn(b, *seed_shape, generator=torch.Generator().manual_seed(0))
                secs, fallbacks, imgs = [], 0, []
                try:
                    call(seeds, b)  # untimed: compilation, autotuning, allocator warm-up
                    sync()
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    for _ in range(args.repeats):
                        sync()
                        t0 = time.perf_counter()
                        imgs, fallbacks = call(seeds, b)
                        sync()
                        secs.append(time.perf_counter() - t0)
                except torch.cuda.OutOfMemoryError:
                    imgs = None
                    torch.cuda.empty_cache()
                    print(f"{name:<6} {b:>5} {label:<48} out of device memory", flush=True)
                    continue
                peak = f"{torch.cuda.max_memory_allocated() / 2**30:>9.2f}" if cuda else f"{'-':>9}"
                per_call[(label, b)] = statistics.median(secs)
                ips = b / per_call[(label, b)]
                if ri == 0:
                    base_ips[b], base_imgs[b] = ips, imgs
                ratio = f"{ips / base_ips[b]:>7.2f}x" if b in base_ips else f"{'-':>8}"
                fb = str(fallbacks) if call in (ours_call, ours_rows_call) else "-"
                vs = "- (other prompts)" if call is ours_rows_call else _compare(imgs, base_imgs.get(b, []))
                print(f"{name:<6} {b:>5} {label:<48} {ips:>9.3f} {ratio} {peak} {fb:>9}  {vs:>27}", flush=True)
                prev_b = b
        pipe = current = None  # free the device memory before the next model
        if cuda:
            torch._dynamo.reset()
            torch.cuda.empty_cache()
    load = os.getloadavg()
    print(f"wall time {time.perf_counter() - t_start:.0f} s; host load {load[0]:.1f} at the end", flush=True)


if __name__ == "__main__":
    main()
