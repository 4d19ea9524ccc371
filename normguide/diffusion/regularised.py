"""``ddim-reg``: DDIM inversion with pix2pix-zero's noise regularisation (Parmar et al., SIGGRAPH
2023; diffusers' deprecated ``StableDiffusionPix2PixZeroPipeline.invert`` /
``StableDiffusionDiffEditPipeline.invert``).

An inverted seed need not look Gaussian (``health.py``). At every inversion step the predicted
noise ε̂ is pushed toward i.i.d. N(0, 1) before the DDIM step, by ``num_reg_steps`` rounds of
gradient steps on two penalties:

- auto-correlation: Σ over channels and scales (the map average-pooled by 2 until a side is at most
  8) of E[ε̂·roll(ε̂, k)]², along height and width, times ``lambda_auto_corr``;
- KL of ε̂'s empirical mean and variance to N(0, 1), times ``lambda_kl``.

Each gradient step is halved until its penalty does not grow (the diffusers code's fixed step
diverges where ε̂'s variance is far from 1). Deterministic, unlike the diffusers code (which draws its roll amounts from a generator): the
``num_auto_corr_rolls`` rolls are k = 1, 2, ..., capped at half the side, so the same image always
gives the same seed and no randomness enters the seed. The seed is the end point of the
(regularised) DDIM integration itself; the round trip regenerates it with plain DDIM, so the
regularisation's cost in reconstruction is measured, not hidden. v-prediction models: ε̂ is
derived from v̂ as the diffusers pipeline does (ε = √ᾱ·v + √(1−ᾱ)·z).
"""

from __future__ import annotations

import inspect
import math

import torch

from normguide.diffusion.ddim import InversionResult, encode_images, prompt_conditioning, regenerate_latents
from normguide.diffusion.devices import exclusive_device

DEFAULTS = {"lambda_auto_corr": 20.0, "lambda_kl": 20.0, "num_reg_steps": 5, "num_auto_corr_rolls": 5}


def auto_corr_loss(eps: torch.Tensor, rolls: int) -> torch.Tensor:
    """pix2pix-zero's multi-scale auto-correlation penalty of (B, C, h, w) ε̂, deterministic rolls."""
    loss = eps.new_zeros(())
    for i in range(eps.shape[0]):
        for j in range(eps.shape[1]):
            noise = eps[i : i + 1, j : j + 1]
            while True:
                for k in range(1, rolls + 1):
                    k = min(k, max(1, noise.shape[2] // 2))
                    loss = loss + (noise * torch.roll(noise, shifts=k, dims=2)).mean() ** 2
                    loss = loss + (noise * torch.roll(noise, shifts=k, dims=3)).mean() ** 2
                if noise.shape[2] <= 8:
                    break
                noise = torch.nn.functional.avg_pool2d(noise, kernel_size=2)
    return loss / rolls


def kl_divergence(eps: torch.Tensor) -> torch.Tensor:
    return eps.var() + eps.mean() ** 2 - 1 - torch.log(eps.var() + 1e-7)


def _descend(eps: torch.Tensor, loss_fn, lam: float) -> torch.Tensor:
    """One gradient step of size ``lam`` on ``loss_fn`` at ``eps``, halved (up to 10 times) until
    the loss does not grow and stays finite; ``eps`` unchanged if no step qualifies. (The plain
    step of the diffusers code diverges to NaN when ε̂'s variance is far from 1, e.g. on the
    random demo builds, where the KL gradient grows as 1/var.)"""
    var = eps.detach().clone().requires_grad_(True)
    loss = loss_fn(var)
    loss.backward()
    grad, base = var.grad.detach(), float(loss.detach())
    if not torch.isfinite(grad).all() or not math.isfinite(base):
        return eps
    step = lam
    for _ in range(11):
        cand = eps - step * grad
        with torch.no_grad():
            value = float(loss_fn(cand))
        if math.isfinite(value) and value <= base and torch.isfinite(cand).all():
            return cand
        step /= 2
    return eps


def _regularise(eps: torch.Tensor, settings: dict) -> torch.Tensor:
    """The penalties' descent, one sample at a time (a seed does not depend on its batch mates)."""
    rows = []
    with torch.enable_grad():
        for row in eps.detach().split(1):
            for _ in range(settings["num_reg_steps"]):
                if settings["lambda_auto_corr"] > 0:
                    row = _descend(row, lambda e: auto_corr_loss(e, settings["num_auto_corr_rolls"]),
                                   settings["lambda_auto_corr"])
                if settings["lambda_kl"] > 0:
                    row = _descend(row, kl_divergence, settings["lambda_kl"])
            rows.append(row.detach())
    return torch.cat(rows)


def invert_images_regularised(model, images, prompt, *, num_inference_steps=50, guidance_scale=1.0, batch_size=4,
                              reconstruction=True, batch_invariant=None, **settings) -> InversionResult:
    """DDIM-invert images with the noise regularisation above; the arguments and result are
    ``ddim.invert_images``'s (``settings`` overrides ``DEFAULTS``). Per image, no batching
    effects: the penalties are per sample."""
    from diffusers import DDIMInverseScheduler

    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"ddim-reg: unknown setting(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    if len(images) == 0:
        raise ValueError("images must hold at least one image, got an empty sequence")
    cfg = {**DEFAULTS, **settings}
    sched_cfg = dict(model.pipe.scheduler.config)
    keys = inspect.signature(DDIMInverseScheduler.__init__).parameters
    is_v = sched_cfg.get("prediction_type", "epsilon") == "v_prediction"
    seeds, latents = [], []
    with torch.inference_mode(), exclusive_device(model.device):
        cond = prompt_conditioning(model, prompt, guidance_scale)
    for start in range(0, len(images), batch_size):
        with exclusive_device(model.device):
            inverse = DDIMInverseScheduler.from_config({k: v for k, v in sched_cfg.items() if k in keys})
            inverse.set_timesteps(num_inference_steps)
            with torch.no_grad():
                z0 = encode_images(model, images[start : start + batch_size]).float()
            z = z0
            b = z.shape[0]
            kwargs = cond.unet_kwargs(b, model.dtype)
            for t in inverse.timesteps:
                with torch.no_grad():
                    unet_in = torch.cat([z, z]) if cond.guided else z
                    out = model.pipe.unet(unet_in.to(model.dtype), t.to(model.device), **kwargs).sample.float()
                    if cond.guided:
                        uncond, text = out.chunk(2)
                        out = uncond + cond.guidance_scale * (text - uncond)
                if is_v:
                    a = inverse.alphas_cumprod[int(t)].to(z.device)
                    eps = a.sqrt() * out + (1 - a).sqrt() * z
                    eps = _regularise(eps, cfg)
                    out = (eps - (1 - a).sqrt() * z) / a.sqrt()  # back to v for the scheduler
                else:
                    out = _regularise(out, cfg)
                with torch.no_grad():
                    z = inverse.step(out, t, z).prev_sample
            seeds.append(z.detach().cpu())
            latents.append(z0.cpu())
    seeds_t, latents_t = torch.cat(seeds), torch.cat(latents)
    errors = None
    if reconstruction:
        again = regenerate_latents(model, seeds_t, prompt, num_inference_steps=num_inference_steps,
                                   guidance_scale=guidance_scale)
        errors = (again - latents_t).pow(2).flatten(1).mean(1).sqrt().tolist()
    return InversionResult(seeds=seeds_t, latents=latents_t, reconstruction_error=errors,
                           precision_fallback=[None] * len(images))
