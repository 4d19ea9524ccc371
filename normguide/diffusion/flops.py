"""Model FLOPs per image, model FLOP utilisation (MFU) and cost, from the model itself.

FLOPs per image = (UNet FLOPs of one row) x (rows per image per step: 2 with classifier-free
guidance, else 1) x steps, plus one VAE decode. The UNet's and the VAE decoder's FLOPs are counted
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


def unet_flops_per_row(model) -> int:
    """FLOPs of one UNet forward on one latent row at the model's seed shape (cached on ``model``)."""
    cache = model.__dict__.setdefault("_normguide_flops", {})
    if "unet" not in cache:
        pipe = model.pipe
        unet = pipe.unet
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
        dtype = next(iter(vae.decoder.parameters())).dtype
        z = torch.zeros(1, *model.seed_shape, dtype=dtype, device=model.device)
        cache["vae"] = _count(lambda: vae.decode(z))
    return cache["vae"]


def flops_per_image(model, *, steps: int, guidance_scale: float) -> int:
    """UNet FLOPs x rows per image (2 with CFG) x steps + one VAE decode."""
    rows = 2 if guidance_scale > 1.0 else 1
    return unet_flops_per_row(model) * rows * steps + vae_decode_flops(model)


def device_peak_tflops(device: torch.device | str, dtype: str, *, override: float | None = None,
                       tf32: bool = False) -> float | None:
    """The device's dense peak TFLOP/s for ``dtype`` (``override`` wins); None when unknown (CPU,
    an unlisted GPU)."""
    if override is not None:
        return float(override)
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name(device)
    key = "tf32" if (dtype == "float32" and tf32) else dtype
    for fragment, peaks in PEAK_TFLOPS.items():
        if fragment in name:
            return peaks.get(key)
    return None


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
