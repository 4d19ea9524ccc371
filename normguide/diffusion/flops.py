"""Model FLOPs per image, model FLOP utilisation (MFU) and cost, from the model itself.

FLOPs per image = (UNet FLOPs of one row) x (rows per image per step: 2 with classifier-free
guidance, else 1) x steps, plus one VAE decode. For the flow-matching transformer families (SD3,
FLUX, PixArt) the same: one sampling step's transformer call (its rows: 2 with classifier-free
guidance, 1 for FLUX's embedded guidance) x transformer calls of the Euler sampler, plus one VAE
decode. The text encoders run once per prompt and are not counted. The UNet's and the VAE decoder's FLOPs are counted
once per model and input shape by ``torch.utils.flop_counter.FlopCounterMode`` on a single forward
(cached on the model object), so they follow the checkpoint's real configuration (channels,
attention, resolution). Counted FLOPs are multiply-adds x 2 of matmuls and convolutions, the
convention MFU uses (Chowdhery et al. 2022, PaLM, appendix B).

MFU = achieved model FLOP/s / the device's peak FLOP/s; the peaks are the vendors' dense
(no-sparsity) tensor-core numbers for the dtype (``PEAK_TFLOPS``); on CPU the peak is unknown
unless given. Cost per 1,000 images = device price per hour / (images per hour) x 1,000.
"""

from __future__ import annotations

import torch

#: Dense peak TFLOP/s per device name fragment and dtype (vendor data sheets, no sparsity).
PEAK_TFLOPS: dict[str, dict[str, float]] = {
    "H200": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0, "tf32": 494.0},
    "H100 PCIe": {"bfloat16": 756.0, "float16": 756.0, "float32": 51.0, "tf32": 378.0},  # before "H100"
    "H100": {"bfloat16": 989.0, "float16": 989.0, "float32": 67.0, "tf32": 494.0},  # SXM
    "A100": {"bfloat16": 312.0, "float16": 312.0, "float32": 19.5, "tf32": 156.0},
    "L40S": {"bfloat16": 362.0, "float16": 362.0, "float32": 91.6, "tf32": 183.0},
    "L4": {"bfloat16": 121.0, "float16": 121.0, "float32": 30.3, "tf32": 60.0},
    "A10": {"bfloat16": 125.0, "float16": 125.0, "float32": 31.2, "tf32": 62.5},
    "T4": {"float16": 65.0, "float32": 8.1},
}


def _count(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def _plain(module):
    """The module under a ``torch.compile`` wrapper (counting through it would compile a new shape)."""
    return getattr(module, "_orig_mod", module)


def unet_flops_per_row(model) -> int:
    """FLOPs of one UNet forward on one latent row at the model's seed shape (cached on ``model``)."""
    cache = model.__dict__.setdefault("_normguide_flops", {})
    if "unet" not in cache:
        pipe = model.pipe
        unet = _plain(pipe.unet)
        z = torch.zeros(1, *model.seed_shape, dtype=unet.dtype, device=model.device)
        cfg = unet.config
        ctx = torch.zeros(1, 77 if cfg.get("cross_attention_dim") else 1, cfg.get("cross_attention_dim") or 1,
                          dtype=unet.dtype, device=model.device)
        kwargs = {}
        if cfg.get("addition_embed_type") == "text_time":  # SDXL: pooled text and time ids
            tdim = cfg.get("projection_class_embeddings_input_dim") - 6 * cfg.get("addition_time_embed_dim")
            kwargs["added_cond_kwargs"] = {"text_embeds": torch.zeros(1, tdim, dtype=unet.dtype, device=model.device),
                                           "time_ids": torch.zeros(1, 6, dtype=unet.dtype, device=model.device)}
        t = torch.tensor(1, device=model.device)
        cache["unet"] = _count(lambda: unet(z, t, encoder_hidden_states=ctx, **kwargs))
    return cache["unet"]


def vae_decode_flops(model) -> int:
    """FLOPs of one VAE decode of one latent (cached on ``model``)."""
    cache = model.__dict__.setdefault("_normguide_flops", {})
    if "vae" not in cache:
        vae = model.pipe.vae
        decoder = vae.decoder
        vae.decoder = _plain(decoder)  # gpu.compile_vae: count the plain decoder, compile no new shape
        try:
            dtype = next(iter(vae.decoder.parameters())).dtype
            z = torch.zeros(1, *model.seed_shape, dtype=dtype, device=model.device)
            cache["vae"] = _count(lambda: vae.decode(z))
        finally:
            vae.decoder = decoder
    return cache["vae"]


def transformer_flops_per_step(model, *, guidance_scale: float) -> int:
    """FLOPs of one sampling step's transformer call for one image of a flow-matching family (its
    rows: 2 with classifier-free guidance), at the model's seed shape, on the conditioning the
    family builds for an empty prompt (padded to the family's fixed text length). Cached on
    ``model`` per number of rows."""
    from normguide.diffusion.families import for_model

    family = for_model(model)
    with torch.inference_mode():
        cond = family.encode_prompt(model, "", guidance_scale)
    rows = 2 if cond.guided else 1
    cache = model.__dict__.setdefault("_normguide_flops", {})
    key = f"transformer-{rows}"
    if key not in cache:
        pipe = model.pipe
        compiled = family.denoiser(pipe)
        family.set_denoiser(pipe, _plain(compiled))  # count the plain module: no compile of a new shape
        try:
            x = torch.zeros(rows, *model.seed_shape, dtype=model.dtype, device=model.device)
            t = torch.full((rows,), 500.0, dtype=model.dtype, device=model.device)
            cache[key] = _count(lambda: family.transformer_call(model, x, t, cond.repeat(1)))
        finally:
            family.set_denoiser(pipe, compiled)
    return cache[key]


def flops_per_image(model, *, steps: int, guidance_scale: float) -> int:
    """UNet FLOPs x rows per image (2 with CFG) x steps + one VAE decode; for a flow-matching
    transformer family, one step's transformer FLOPs x the Euler sampler's calls + one VAE decode.
    ``TypeError`` for a model that has neither."""
    if getattr(model.pipe, "unet", None) is not None:
        rows = 2 if guidance_scale > 1.0 else 1
        return unet_flops_per_row(model) * rows * steps + vae_decode_flops(model)
    from normguide.diffusion.families import for_model
    from normguide.diffusion.families.flow import FlowFamily

    family = for_model(model)
    if not isinstance(family, FlowFamily):
        raise TypeError(f"no FLOP count for the {model.family} family (neither a UNet nor a flow-matching transformer)")
    return (transformer_flops_per_step(model, guidance_scale=guidance_scale) * family.model_calls("flow-euler", steps)
            + vae_decode_flops(model))


def device_peak_tflops(device: torch.device | str, dtype: str, *, override: float | None = None,
                       tf32: bool = False) -> float | None:
    """The device's dense peak TFLOP/s for ``dtype`` (``override`` wins); None when unknown (CPU,
    an unlisted GPU)."""
    return device_peak(device, dtype, override=override, tf32=tf32)[0]


def device_peak(device: torch.device | str, dtype: str, *, override: float | None = None,
                tf32: bool = False) -> tuple[float | None, str]:
    """(:func:`device_peak_tflops`, where it came from or why there is none), e.g. ``(989.0, "NVIDIA
    H200, bfloat16 (PEAK_TFLOPS: vendor data sheet, dense)")`` or ``(None, "cpu: no peak known; set cost.peak_tflops")``."""
    if override is not None:
        return float(override), "cost.peak_tflops (given)"
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None, f"{device.type}: no peak known; set cost.peak_tflops"
    return peak_for_name(torch.cuda.get_device_name(device), "tf32" if (dtype == "float32" and tf32) else dtype)


def peak_for_name(name: str, key: str) -> tuple[float | None, str]:
    """The peak of the first :data:`PEAK_TFLOPS` fragment in the CUDA device ``name`` (the table
    lists the more specific fragments first: "H100 PCIe" before "H100", "A100" before "A10")
    for ``key`` (a dtype or "tf32"), with where it came from or why there is none."""
    for fragment, peaks in PEAK_TFLOPS.items():
        if fragment in name:
            if key in peaks:
                return peaks[key], f"{name}, {key} (PEAK_TFLOPS: vendor data sheet, dense)"
            return None, f"{name}: no {key} peak in PEAK_TFLOPS; set cost.peak_tflops"
    return None, f"{name}: not in PEAK_TFLOPS; set cost.peak_tflops"


def utilisation(*, images: int, seconds: float, flops_per_image: int, peak_tflops: float | None,
                devices: int = 1, price_per_hour: float | None = None) -> dict:
    """The run's throughput record: images/s per device, achieved TFLOP/s, MFU (None when the peak
    is unknown) and $ per 1,000 images (None without a price)."""
    if seconds <= 0 or images <= 0:
        return {"images": images, "seconds": seconds, "flops_per_image": flops_per_image, "images_per_s_per_device": None,
                "achieved_tflops": None, "peak_tflops": peak_tflops, "mfu": None, "usd_per_1000_images": None}
    ips = images / seconds / devices
    achieved = ips * flops_per_image / 1e12
    cost = None if price_per_hour is None else price_per_hour * devices * seconds / 3600 / images * 1000
    return {"images": images, "seconds": seconds, "flops_per_image": flops_per_image, "images_per_s_per_device": ips,
            "achieved_tflops": achieved, "peak_tflops": peak_tflops,
            "mfu": None if not peak_tflops else achieved / peak_tflops, "usd_per_1000_images": cost}
