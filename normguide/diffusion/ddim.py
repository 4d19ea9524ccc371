"""DDIM inversion (images -> seeds) and DDIM generation (seeds -> images).

Notation (Song et al., "Denoising Diffusion Implicit Models", ICLR 2021):

    x          RGB image in [-1, 1], shape (3, H, W), H = W = model.resolution
    z_0        VAE latent of x: mean of q(z | x) times the VAE scaling factor, shape (C, h, w)
    z_T        the seed: the latent at the last timestep of the sampling grid
    t_1 > … > t_S   the DDIM grid of S = num_inference_steps training timesteps (scheduler.timesteps)
    ᾱ_t        scheduler.alphas_cumprod[t]; ᾱ at "t_{S+1}" (below the grid) is final_alpha_cumprod
    ε̂          the UNet's noise estimate, with classifier-free guidance g:
               ε̂ = ε_θ(z, t, ∅) + g·(ε_θ(z, t, c) − ε_θ(z, t, ∅))   (g = 1: conditional only)
               (v-prediction models predict v; the schedulers convert, Salimans & Ho 2022 eq. 2.4)

DDIM step with η = 0 (eq. 12), from level t to level s:

    x̂_0 = (z_t − √(1−ᾱ_t)·ε̂) / √ᾱ_t,      z_s = √ᾱ_s·x̂_0 + √(1−ᾱ_s)·ε̂

Generation runs it downwards over the grid (DDIMScheduler); inversion runs the same update upwards
(DDIMInverseScheduler, built from the same config, so its grid is the same set of timesteps and its
ᾱ at the bottom, set_alpha_to_one, matches). Both evaluate ε̂ at the upper timestep of each pair
(t_k, t_{k+1}): inversion feeds z_{t_{k+1}} where generation feeds z_{t_k}. That mismatch is the
whole inversion error; it is O(Lipschitz(ε_θ)·|z_{t_k} − z_{t_{k+1}}|) per step, so the round trip
generate(invert(x)) closes as S grows for a smooth model.

All latents are kept in float32 between steps, whatever the model dtype; only the UNet and VAE run
in model.dtype (the VAE in float32 where its config asks for fp16 upcasting).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from normguide.diffusion.devices import exclusive_device
from normguide.diffusion.loading import LoadedModel

if TYPE_CHECKING:
    from PIL import Image


@dataclass
class InversionResult:
    """Seeds from DDIM inversion of N images.

    Attributes:
        seeds: (N, C, h, w) float32 on CPU: z_T.
        latents: (N, C, h, w) float32 on CPU: z_0, the scaled VAE-encoded images (posterior mean).
        reconstruction_error: per image, RMSE over the C·h·w entries between z_0 and the latent
            obtained by generating from z_T with the same steps, guidance and prompt; None if
            reconstruction was not requested.
    """

    seeds: torch.Tensor
    latents: torch.Tensor
    reconstruction_error: list[float] | None


# 1. Images <-> latents -----------------------------------------------------------------------------


def prepare_image(image: Image.Image, resolution: int) -> Image.Image:
    """RGB, shorter side resized to ``resolution`` (bicubic), then centre-cropped to a square."""
    from PIL import Image as PILImage

    if resolution < 1:
        raise ValueError(f"resolution must be >= 1, got {resolution}")
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # Transparent pixels have arbitrary colours underneath; put them on white, not black.
            rgba = image.convert("RGBA")
            background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
            image = PILImage.alpha_composite(background, rgba)
        image = image.convert("RGB")
    w, h = image.size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), PILImage.Resampling.BICUBIC)
    left, top = (new_w - resolution) // 2, (new_h - resolution) // 2
    return image.crop((left, top, left + resolution, top + resolution))


def _images_to_tensor(images: Sequence[Image.Image], resolution: int) -> torch.Tensor:
    """(B, 3, R, R) float32 in [-1, 1]."""
    arrays = [np.asarray(prepare_image(im, resolution), dtype=np.float32) for im in images]
    batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)
    return batch / 127.5 - 1.0


def _latent_norm(vae) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Per-channel latent mean/std some VAEs declare (``latents_mean``/``latents_std``), else None."""
    mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
    if mean is None or std is None:
        return None, None
    return torch.tensor(mean).view(1, -1, 1, 1), torch.tensor(std).view(1, -1, 1, 1)


def encode_images(model: LoadedModel, images: Sequence[Image.Image], *, rowwise: bool = False) -> torch.Tensor:
    """z_0 = scaling_factor · E[q(z | x)] for each image, (B, C, h, w) float32 on model.device.

    ``rowwise``: encode one image at a time (see ``_rowwise``)."""
    vae = model.pipe.vae
    x = _images_to_tensor(images, model.resolution).to(model.device, vae.dtype)
    z = _rowwise(rowwise, lambda row: vae.encode(row).latent_dist.mean.float(), x)
    mean, std = _latent_norm(vae)
    if mean is not None:
        z = (z - mean.to(z.device)) / std.to(z.device)
    return z * vae.config.scaling_factor


def decode_latents(model: LoadedModel, latents: torch.Tensor, *, rowwise: bool = False) -> list[Image.Image]:
    """VAE-decode (B, C, h, w) latents to B RGB PIL images of model.resolution px.

    ``rowwise``: decode one latent at a time (see ``_rowwise``)."""
    vae = model.pipe.vae
    z = latents.float() / vae.config.scaling_factor
    mean, std = _latent_norm(vae)
    if mean is not None:
        z = z * std.to(z.device) + mean.to(z.device)
    x = _rowwise(rowwise, lambda row: vae.decode(row).sample.float(), z.to(vae.dtype))
    return model.pipe.image_processor.postprocess(x.cpu(), output_type="pil")


# 2. Prompt conditioning ----------------------------------------------------------------------------


@dataclass
class _Conditioning:
    """Prompt embeddings for one image, [unconditional; conditional] stacked when guided."""

    embeds: torch.Tensor  # (k, L, D), k = 2 with guidance else 1
    text_embeds: torch.Tensor | None  # SDXL pooled text, (k, D')
    time_ids: torch.Tensor | None  # SDXL (original size, crop top-left, target size), (k, 6)
    guidance_scale: float

    @property
    def guided(self) -> bool:
        return self.embeds.shape[0] == 2

    def unet_kwargs(self, batch: int) -> dict:
        """Repeat to a UNet batch of k·batch rows: all unconditional rows first, as in diffusers."""
        kwargs: dict = {"encoder_hidden_states": self.embeds.repeat_interleave(batch, dim=0)}
        if self.text_embeds is not None:
            kwargs["added_cond_kwargs"] = {
                "text_embeds": self.text_embeds.repeat_interleave(batch, dim=0),
                "time_ids": self.time_ids.repeat_interleave(batch, dim=0),
            }
        return kwargs


def _encode_prompt(model: LoadedModel, prompt: str, guidance_scale: float) -> _Conditioning:
    """The pipeline's own prompt encoding (negative prompt: empty; SDXL zeroes it, as its pipeline does)."""
    pipe, guided = model.pipe, guidance_scale > 1.0
    if model.family == "sdxl":
        embeds, neg, pooled, neg_pooled = pipe.encode_prompt(
            prompt, device=model.device, num_images_per_prompt=1, do_classifier_free_guidance=guided
        )
        r = model.resolution
        time_ids = torch.tensor([[r, r, 0, 0, r, r]], dtype=embeds.dtype, device=model.device)
        if guided:
            embeds, pooled, time_ids = torch.cat([neg, embeds]), torch.cat([neg_pooled, pooled]), time_ids.repeat(2, 1)
        return _Conditioning(embeds, pooled, time_ids, guidance_scale)
    embeds, neg = pipe.encode_prompt(prompt, model.device, 1, guided)
    if guided:
        embeds = torch.cat([neg, embeds])
    return _Conditioning(embeds, None, None, guidance_scale)


def _rowwise(rowwise: bool, fn, x: torch.Tensor) -> torch.Tensor:
    """fn(x), or fn applied one row at a time and concatenated.

    Why: conv/matmul kernels block their work by batch size, so a sample's float32 rounding depends
    on how many others share its batch (measured on CPU: max |Δ| ~1e-6 per UNet call, enough to flip
    image bytes after 50 steps). One row at a time makes every image's bytes independent of
    batch_size and of its batch mates, at a cost: ~2.5x for the overhead-bound demo, little for real
    models on CPU (compute-bound), a lot on GPU (which is why it is only the CPU default).
    """
    if not rowwise or x.shape[0] == 1:
        return fn(x)
    return torch.cat([fn(row) for row in x.split(1)])


def _default_rowwise(model: LoadedModel, batch_invariant: bool | None) -> bool:
    return model.device.type == "cpu" if batch_invariant is None else bool(batch_invariant)


def _noise_estimate(model: LoadedModel, z: torch.Tensor, t: int, cond: _Conditioning, rowwise: bool) -> torch.Tensor:
    """ε̂ (or v̂) for float32 latents z at timestep t, with guidance; float32."""
    return _rowwise(rowwise, lambda row: _guided_unet(model, row, t, cond), z)


def _guided_unet(model: LoadedModel, z: torch.Tensor, t: int, cond: _Conditioning) -> torch.Tensor:
    unet_in = torch.cat([z, z]) if cond.guided else z
    out = model.pipe.unet(unet_in.to(model.dtype), t, **cond.unet_kwargs(z.shape[0])).sample.float()
    if cond.guided:
        uncond, text = out.chunk(2)
        out = uncond + cond.guidance_scale * (text - uncond)
    return out


# 3. The two DDIM loops -----------------------------------------------------------------------------


def _schedulers(model: LoadedModel, num_inference_steps: int):
    """Fresh (forward, inverse) DDIM schedulers from the pipeline's config: per call, because
    set_timesteps mutates them and calls may run in parallel threads."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    config = dict(model.pipe.scheduler.config)
    # DDIMInverseScheduler takes a subset of DDIMScheduler's options (no thresholding); pass only those.
    inverse_keys = inspect.signature(DDIMInverseScheduler.__init__).parameters
    inverse_config = {k: v for k, v in config.items() if k in inverse_keys}
    forward, inverse = DDIMScheduler.from_config(config), DDIMInverseScheduler.from_config(inverse_config)
    forward.set_timesteps(num_inference_steps)
    inverse.set_timesteps(num_inference_steps)
    return forward, inverse


def _ddim_down(model, scheduler, z: torch.Tensor, cond: _Conditioning, rowwise: bool) -> torch.Tensor:
    for t in scheduler.timesteps.tolist():
        eps = _noise_estimate(model, z, t, cond, rowwise)
        z = scheduler.step(eps, t, z, eta=0.0).prev_sample
    return z


def _ddim_up(model, inverse_scheduler, z: torch.Tensor, cond: _Conditioning, rowwise: bool) -> torch.Tensor:
    for t in inverse_scheduler.timesteps.tolist():
        eps = _noise_estimate(model, z, t, cond, rowwise)
        z = inverse_scheduler.step(eps, t, z).prev_sample
    return z


def _check_common(prompt: str, num_inference_steps: int, guidance_scale: float, batch_size: int) -> None:
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    if not isinstance(num_inference_steps, int) or not 1 <= num_inference_steps <= 1000:
        raise ValueError(f"num_inference_steps must be an int in [1, 1000], got {num_inference_steps!r}")
    if not math.isfinite(guidance_scale) or guidance_scale < 1.0:
        raise ValueError(f"guidance_scale must be >= 1 (1 = no classifier-free guidance), got {guidance_scale!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")


def invert_images(
    model: LoadedModel,
    images: Sequence[Image.Image],
    prompt: str,
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    batch_size: int = 4,
    reconstruction: bool = True,
    batch_invariant: bool | None = None,
) -> InversionResult:
    """DDIM-invert images to seeds z_T, ``batch_size`` images at a time; deterministic.

    Each image is prepared with ``prepare_image`` to model.resolution, encoded to z_0, and carried up
    the DDIM grid (module docstring). With ``reconstruction`` the seeds are also carried back down
    with the same steps/guidance/prompt and compared with z_0 (RMSE): a direct measure of how well
    the seed reproduces the reference; it roughly doubles the cost.

    ``batch_invariant`` (default: True on CPU, False on GPU): run the models one image at a time
    inside each batch so that results do not depend on ``batch_size`` (see ``_rowwise``).
    """
    # 1. Check inputs
    if len(images) == 0:
        raise ValueError("images must hold at least one image, got an empty sequence")
    _check_common(prompt, num_inference_steps, guidance_scale, batch_size)
    rowwise = _default_rowwise(model, batch_invariant)

    seeds, latents, errors = [], [], []
    with torch.inference_mode():
        # 2. Encode the prompt once (it is the same for every image)
        with exclusive_device(model.device):
            cond = _encode_prompt(model, prompt, guidance_scale)
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            with exclusive_device(model.device):
                forward, inverse = _schedulers(model, num_inference_steps)
                # 3. Encode the images: z_0
                z0 = encode_images(model, chunk, rowwise=rowwise)
                # 4. Invert: z_0 -> z_T
                zt = _ddim_up(model, inverse, z0, cond, rowwise)
                # 5. Optionally regenerate z_0 from z_T and measure the round trip
                if reconstruction:
                    z0_again = _ddim_down(model, forward, zt, cond, rowwise)
                    errors += (z0_again - z0).pow(2).flatten(1).mean(1).sqrt().tolist()
            seeds.append(zt.cpu())
            latents.append(z0.cpu())
    return InversionResult(
        seeds=torch.cat(seeds),
        latents=torch.cat(latents),
        reconstruction_error=errors if reconstruction else None,
    )


def generate_images(
    model: LoadedModel,
    seeds: torch.Tensor,
    prompt: str,
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 7.5,
    batch_size: int = 4,
    batch_invariant: bool | None = None,
) -> Iterator[list[Image.Image]]:
    """Generate one image per seed by DDIM (η = 0); yields a list of PIL images per batch, in order.

    Args:
        seeds: (N, C, h, w) with (C, h, w) = model.seed_shape, float32 on any device. Used as z_T
            as given: DDIM's initial noise sigma is 1, and NAO seeds are planned at their norm.
        prompt: the text condition; the negative prompt is empty.
        batch_invariant: run the models one seed at a time inside each batch, so that an image's
            bytes do not depend on batch_size or on its batch mates (default: True on CPU, where it
            is verified bit-exact; False on GPU, where batches stay whole for throughput).

    Inputs are checked when this is called (ValueError), not at the first ``next``. The device lock
    is held while a batch is computed and released before it is yielded.
    """
    # 1. Check inputs
    if seeds.ndim != 4 or tuple(seeds.shape[1:]) != model.seed_shape:
        raise ValueError(f"seeds must have shape (N, {', '.join(map(str, model.seed_shape))}), got {tuple(seeds.shape)}")
    if not torch.is_floating_point(seeds) or not torch.isfinite(seeds).all():
        raise ValueError("seeds must be finite floating-point values")
    _check_common(prompt, num_inference_steps, guidance_scale, batch_size)
    rowwise = _default_rowwise(model, batch_invariant)
    return _generate_batches(model, seeds, prompt, num_inference_steps, guidance_scale, batch_size, rowwise)


def _generate_batches(model, seeds, prompt, num_inference_steps, guidance_scale, batch_size, rowwise):
    if seeds.shape[0] == 0:
        return
    # Grad mode and the lock are entered per batch and left before each yield: a generator must not
    # leave thread-local state (inference mode) or a lock switched on in its consumer's code.
    # 2. Encode the prompt once
    with torch.inference_mode(), exclusive_device(model.device):
        cond = _encode_prompt(model, prompt, guidance_scale)
    for start in range(0, seeds.shape[0], batch_size):
        z = seeds[start : start + batch_size].detach().to(model.device, torch.float32)
        with torch.inference_mode(), exclusive_device(model.device):
            forward, _ = _schedulers(model, num_inference_steps)
            # 3. Denoise z_T -> z_0 and decode
            z0 = _ddim_down(model, forward, z, cond, rowwise)
            batch_images = decode_latents(model, z0, rowwise=rowwise)
        yield batch_images
