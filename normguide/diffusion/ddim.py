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
in their own dtype (see ``loading.py`` for which component runs in which precision).

Precision that cannot silently fail. Every sample is checked where it leaves a model: z_0 after
encoding, z_T (and the regenerated z_0) after inversion, z_0 after denoising, and the decoded image
(non-finite, or constant: the fp16 "black image" of diffusers #1614). A sample that fails is retried
once in float32 (``loading.float32_twin``), the cheaper way first: the VAE alone where the latents are
fine ("vae"), else the whole step with every component in float32 ("full"); the result records, per
sample, which fallback it needed (``precision_fallback``: None, "vae" or "full"). A sample that fails
in float32 too raises ``PrecisionError``; no NaN seed or constant image is ever returned.

Batch invariance (what a seed's image depends on). DDIM here is deterministic (η = 0: no noise after
z_T), so an image depends only on its seed, the prompt, the steps and guidance, and on float rounding.
- Batched (the default on every device, ``batch_invariant=False``): batches run whole through the
  models, as diffusers' own pipeline does, and give the bytes bare diffusers gives at the same batch
  size (tested against ``StableDiffusionPipeline`` on the demo model). Kernels block their work by
  batch size, so an image may differ from its single-seed run in the last bits (float32 on CPU:
  max |Δ| ~1e-5 per UNet call, enough to flip some pixel values by one level after many steps;
  fp16 on GPU more, diffusers #2659). Same hardware, software, batch size and seed order give the
  same bytes run to run (cuDNN autotuning off, as PyTorch defaults). With ``torch.compile`` the
  last batch is padded to ``batch_size`` so that every batch runs the same compiled kernels: then
  an image depends on its position in the batch only, never on how many seeds the call had.
- ``batch_invariant=True`` (an option, for users who need an image's bytes independent of its batch
  mates): each sample runs alone through the models, so on CPU the bytes are identical whatever
  ``batch_size`` and batch mates (tested); it costs ~3-5x on CPU at batch 8-32
  (benchmarks/pipeline_throughput.py) and more on GPU.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from normguide.diffusion.devices import exclusive_device
from normguide.diffusion.loading import LoadedModel, float32_twin
from normguide.errors import RunFailure

if TYPE_CHECKING:
    from PIL import Image

#: What a sample's ``precision_fallback`` may say besides None (no fallback needed).
PRECISION_FALLBACKS: tuple[str, ...] = ("vae", "full")


class PrecisionError(RunFailure):
    """A sample that is non-finite (or a constant image) in the model's precision and again in float32."""


@dataclass
class InversionResult:
    """Seeds from DDIM inversion of N images.

    Attributes:
        seeds: (N, C, h, w) float32 on CPU: z_T.
        latents: (N, C, h, w) float32 on CPU: z_0, the scaled VAE-encoded images (posterior mean).
        reconstruction_error: per image, RMSE over the C·h·w entries between z_0 and the latent
            obtained by generating from z_T with the same steps, guidance and prompt; None if
            reconstruction was not requested.
        precision_fallback: per image, None, or the float32 retry it needed: ``"vae"`` (the VAE
            encoder) or ``"full"`` (the whole inversion); see the module docstring.
    """

    seeds: torch.Tensor
    latents: torch.Tensor
    reconstruction_error: list[float] | None
    precision_fallback: list[str | None] = field(default_factory=list)


class GeneratedBatch(list):
    """One batch of generated images: a list of PIL images in seed order, plus per image the
    precision fallback it needed (``precision_fallback[i]``: None, ``"vae"`` or ``"full"``)."""

    def __init__(self, images, precision_fallback):
        super().__init__(images)
        self.precision_fallback: list[str | None] = list(precision_fallback)


def _dtype_of(module: torch.nn.Module) -> torch.dtype:
    """The dtype a module runs in: its first parameter's (``vae.dtype`` would say the encoder's,
    which loading may keep in float32 while the decoder runs in half)."""
    return next(iter(module.parameters())).dtype


def _bad_rows(x: torch.Tensor) -> torch.Tensor:
    """(B,) bool on CPU: rows of x with a non-finite entry."""
    return ~torch.isfinite(x).flatten(1).all(1).cpu()


def _to_device(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host -> device; through pinned memory, asynchronously, on CUDA."""
    if device.type == "cuda" and x.device.type == "cpu":
        return x.pin_memory().to(device, non_blocking=True)
    return x.to(device)


def _to_host(x: torch.Tensor) -> torch.Tensor:
    """Device -> host; into a pinned buffer on CUDA (then waits for the copy)."""
    if x.device.type != "cuda":
        return x
    out = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    out.copy_(x, non_blocking=True)
    torch.cuda.current_stream(x.device).synchronize()
    return out


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


def _encode(model: LoadedModel, x: torch.Tensor, rowwise: bool) -> torch.Tensor:
    """z_0 of (B, 3, R, R) images in [-1, 1]: (B, C, h, w) float32 on model.device."""
    vae = model.pipe.vae
    x = _to_device(x, model.device).to(_dtype_of(vae.encoder))
    z = _rowwise(rowwise, lambda row: vae.encode(row).latent_dist.mean.float(), x)
    mean, std = _latent_norm(vae)
    if mean is not None:
        z = (z - mean.to(z.device)) / std.to(z.device)
    return z * vae.config.scaling_factor


def encode_images(model: LoadedModel, images: Sequence[Image.Image], *, rowwise: bool = False) -> torch.Tensor:
    """z_0 = scaling_factor · E[q(z | x)] for each image, (B, C, h, w) float32 on model.device.

    ``rowwise``: encode one image at a time (see ``_rowwise``). Unchecked (see ``invert_images``)."""
    return _encode(model, _images_to_tensor(images, model.resolution), rowwise)


def _decode(model: LoadedModel, latents: torch.Tensor, rowwise: bool, vae_batch_size: int | None):
    """VAE-decode (B, C, h, w) latents: (uint8 images (B, R, R, 3) on CPU, (B,) bool failed rows).

    A row fails when its image is non-finite or constant (every pixel value the same: the black or
    grey image of an overflowed half-precision VAE). Decodes ``vae_batch_size`` latents at a time
    (VAE slicing: the decoder's activations at full resolution dominate memory, diffusers #1150);
    one at a time with ``rowwise``. The uint8 conversion is ``image_processor.postprocess``'s, done on
    the device so that a quarter of the bytes cross to the host.
    """
    vae = model.pipe.vae
    z = latents.float() / vae.config.scaling_factor
    mean, std = _latent_norm(vae)
    if mean is not None:
        z = z * std.to(z.device) + mean.to(z.device)
    z = z.to(_dtype_of(vae.decoder))
    size = 1 if rowwise else (vae_batch_size or z.shape[0])
    x = torch.cat([vae.decode(part).sample.float() for part in z.split(size)])
    nonfinite = _bad_rows(x)
    # postprocess: denormalize (x·0.5 + 0.5, clamped), then (·255).round() to uint8, as diffusers does
    u8 = (x * 0.5 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    flat = u8.flatten(1)
    constant = (flat.amax(1) == flat.amin(1)).cpu()
    return _to_host(u8), nonfinite | constant


def _to_pil(u8: torch.Tensor) -> list[Image.Image]:
    from PIL import Image as PILImage

    return [PILImage.fromarray(a, "RGB") for a in u8.numpy()]


def decode_latents(model: LoadedModel, latents: torch.Tensor, *, rowwise: bool = False) -> list[Image.Image]:
    """VAE-decode (B, C, h, w) latents to B RGB PIL images of model.resolution px (the bytes of
    ``image_processor.postprocess``). ``rowwise``: one latent at a time. Unchecked (see
    ``generate_images``)."""
    return _to_pil(_decode(model, latents, rowwise, None)[0])


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

    def unet_kwargs(self, batch: int, dtype: torch.dtype) -> dict:
        """Repeat to a UNet batch of k·batch rows: all unconditional rows first, as in diffusers
        (classifier-free guidance in one UNet pass: cond and uncond concatenated)."""
        kwargs: dict = {"encoder_hidden_states": self.embeds.repeat_interleave(batch, dim=0).to(dtype)}
        if self.text_embeds is not None:
            kwargs["added_cond_kwargs"] = {
                "text_embeds": self.text_embeds.repeat_interleave(batch, dim=0).to(dtype),
                "time_ids": self.time_ids.repeat_interleave(batch, dim=0).to(dtype),
            }
        return kwargs


@dataclass
class _RowConditioning:
    """Per-row prompt conditioning of one batch: row r takes ``conds[index[r]]`` (one encoding per
    distinct prompt). Same interface as ``_Conditioning``; ``select`` gives a sub-batch's."""

    conds: list[_Conditioning]
    index: list[int]

    @property
    def guided(self) -> bool:
        return self.conds[0].guided

    @property
    def guidance_scale(self) -> float:
        return self.conds[0].guidance_scale

    def select(self, rows: list[int]) -> _Conditioning | _RowConditioning:
        return _batch_conditioning(self.conds, [self.index[r] for r in rows])

    def _gathered(self, name: str, dtype: torch.dtype) -> torch.Tensor | None:
        parts = [getattr(c, name) for c in self.conds]
        if parts[0] is None:
            return None
        k = parts[0].shape[0]  # all unconditional rows first, then the conditional ones, as diffusers
        return torch.cat([torch.stack([parts[i][j] for i in self.index]) for j in range(k)]).to(dtype)

    def unet_kwargs(self, batch: int, dtype: torch.dtype) -> dict:
        if batch != len(self.index):
            raise ValueError(f"per-row conditioning of {len(self.index)} rows asked for {batch}")
        kwargs: dict = {"encoder_hidden_states": self._gathered("embeds", dtype)}
        if self.conds[0].text_embeds is not None:
            kwargs["added_cond_kwargs"] = {"text_embeds": self._gathered("text_embeds", dtype),
                                           "time_ids": self._gathered("time_ids", dtype)}
        return kwargs


def _batch_conditioning(conds: list[_Conditioning], index: list[int]) -> _Conditioning | _RowConditioning:
    """The conditioning of a batch whose row r has prompt ``index[r]``: the prompt's own
    ``_Conditioning`` when every row has the same one (the single-prompt path, its bytes), else
    per-row."""
    if len(set(index)) == 1:
        return conds[index[0]]
    return _RowConditioning(conds, list(index))


def row_prompts(prompt, n: int, *, what: str = "prompt") -> tuple[list[str], list[int]]:
    """(distinct prompts in first-seen order, per row the index of its prompt) for ``prompt``: one
    string (every row) or a sequence of ``n`` strings, one per seed row. ValueError otherwise."""
    if isinstance(prompt, str):
        return [prompt], [0] * n
    if isinstance(prompt, (bytes, bytearray)) or not isinstance(prompt, Sequence):
        raise ValueError(f"{what} must be a string or a sequence of strings (one per seed), got {type(prompt).__name__}")
    prompts = list(prompt)
    if len(prompts) != n:
        raise ValueError(f"{what} must be one string or one string per seed: got {len(prompts)} prompts for {n} seeds")
    bad = [type(p).__name__ for p in prompts if not isinstance(p, str)]
    if bad:
        raise ValueError(f"{what} must hold strings only, got {bad[0]}")
    distinct: dict[str, int] = {}
    index = [distinct.setdefault(p, len(distinct)) for p in prompts]
    return list(distinct), index


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


def prompt_conditioning(model: LoadedModel, prompt: str, guidance_scale: float) -> _Conditioning:
    """The prompt's UNet conditioning as generation builds it (``unet_kwargs(batch, dtype)``,
    ``guided``, ``guidance_scale``): for other samplers over the same model (refinement). Runs
    the text encoder under no_grad; call it inside ``exclusive_device``."""
    with torch.no_grad():
        return _encode_prompt(model, prompt, guidance_scale)


def ddim_scheduler(model: LoadedModel, num_inference_steps: int):
    """A fresh DDIM scheduler from the pipeline's config with ``num_inference_steps`` set: the
    one generation samples with."""
    return _schedulers(model, num_inference_steps)[0]


def _rowwise(rowwise: bool, fn, x: torch.Tensor) -> torch.Tensor:
    """fn(x), or fn applied one row at a time and concatenated.

    Why: conv/matmul kernels block their work by batch size, so a sample's float32 rounding depends
    on how many others share its batch (measured on CPU: max |Δ| ~1e-5 per UNet call, enough to flip
    image bytes after a few steps). One row at a time makes every image's bytes independent of
    batch_size and of its batch mates, at a cost: ~3-5x for the overhead-bound demo at batch 8-32,
    less for real models on CPU (compute-bound), a lot on GPU (which is why it is an option, off
    by default).
    """
    if not rowwise or x.shape[0] == 1:
        return fn(x)
    return torch.cat([fn(row) for row in x.split(1)])


def _default_rowwise(model: LoadedModel, batch_invariant: bool | None) -> bool:
    """Rowwise only when asked (``batch_invariant=True``); None is the default: batched, as
    diffusers runs, on every device."""
    return bool(batch_invariant)


class _GuidedUNet:
    """ε̂(z, t) with classifier-free guidance in one UNet pass; the repeated prompt embeddings are
    built once per batch size, and t goes in as a 0-d device tensor (a Python int would be a
    constant to torch.compile: one recompilation per timestep, diffusers #7357)."""

    def __init__(self, model: LoadedModel, cond: _Conditioning, timesteps: torch.Tensor):
        self.model, self.cond = model, cond
        self.t_device = timesteps.to(model.device)
        self._kwargs: dict[int, dict] = {}
        self.memory_format = torch.channels_last if model.device.type == "cuda" else torch.contiguous_format

    def __call__(self, z: torch.Tensor, step: int) -> torch.Tensor:
        b = z.shape[0]
        if b not in self._kwargs:
            self._kwargs[b] = self.cond.unet_kwargs(b, self.model.dtype)
        unet_in = torch.cat([z, z]) if self.cond.guided else z
        # one memory format for every call (the scheduler's arithmetic may hand back channels_last
        # strides; a compiled UNet would recompile for them): channels_last on CUDA, as the weights
        unet_in = unet_in.to(self.model.dtype).contiguous(memory_format=self.memory_format)
        out = self.model.pipe.unet(unet_in, self.t_device[step], **self._kwargs[b]).sample.float()
        if self.cond.guided:
            uncond, text = out.chunk(2)
            out = uncond + self.cond.guidance_scale * (text - uncond)
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


def _eps(model, cond, timesteps: torch.Tensor, rowwise: bool):
    """(z, step) -> ε̂ for the batch z: whole, or one row at a time (``_rowwise``), each row then
    with its own prompt's conditioning where the batch mixes prompts."""
    if rowwise and isinstance(cond, _RowConditioning):
        fns = [_GuidedUNet(model, cond.select([r]), timesteps) for r in range(len(cond.index))]
        return lambda z, i: torch.cat([fns[r](row, i) for r, row in enumerate(z.split(1))])
    eps_fn = _GuidedUNet(model, cond, timesteps)
    return lambda z, i: _rowwise(rowwise, lambda row: eps_fn(row, i), z)


def _ddim_down(model, scheduler, z: torch.Tensor, cond: _Conditioning, rowwise: bool) -> torch.Tensor:
    eps_fn = _eps(model, cond, scheduler.timesteps, rowwise)
    for i, t in enumerate(scheduler.timesteps.tolist()):
        z = scheduler.step(eps_fn(z, i), t, z, eta=0.0).prev_sample
    return z


def _ddim_up(model, inverse_scheduler, z: torch.Tensor, cond: _Conditioning, rowwise: bool) -> torch.Tensor:
    eps_fn = _GuidedUNet(model, cond, inverse_scheduler.timesteps)
    for i, t in enumerate(inverse_scheduler.timesteps.tolist()):
        eps = _rowwise(rowwise, lambda row, i=i: eps_fn(row, i), z)
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


def _pad_rows(x: torch.Tensor, size: int) -> torch.Tensor:
    """x padded to ``size`` rows by repeating its last row (a compiled model keeps one shape)."""
    if x.shape[0] >= size:
        return x
    return torch.cat([x, x[-1:].expand(size - x.shape[0], *x.shape[1:])])


def _precision_error(what: str, prompt, rows: list[int], model: LoadedModel) -> PrecisionError:
    """``prompt``: one string, or per row (a sequence): then each failed row's prompt is named."""
    tried = "in float32" if model.dtype == torch.float32 else f"in {str(model.dtype).removeprefix('torch.')} and again in float32"
    return PrecisionError(
        f"{what} for {prompt_rows_text(prompt, rows)} came out non-finite or as a constant image {tried}; "
        "refusing to return them (check the checkpoint's weights, the seeds' scale and the guidance scale)"
    )


def prompt_rows_text(prompt, rows: list[int]) -> str:
    """"prompt 'a cat': sample(s) [0, 1]" for one prompt; for per-row prompts each failed row's
    prompt: "prompt 'a cat': sample(s) [0]; prompt 'a dog': sample(s) [3]"."""
    if isinstance(prompt, str):
        return f"prompt {prompt!r}: sample(s) {rows}"
    by_prompt: dict[str, list[int]] = {}
    for r in rows:
        by_prompt.setdefault(prompt[r], []).append(r)
    return "; ".join(f"prompt {p!r}: sample(s) {rs}" for p, rs in by_prompt.items())


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

    ``batch_invariant`` (default: off, batched as diffusers runs): run the models one image at a time
    inside each batch so that results do not depend on ``batch_size`` (see ``_rowwise``).

    Every z_0, z_T (and regenerated z_0) is checked per image and retried once in float32 where it
    is not finite (module docstring); ``PrecisionError`` if float32 does not help either.
    """
    # 1. Check inputs
    if len(images) == 0:
        raise ValueError("images must hold at least one image, got an empty sequence")
    _check_common(prompt, num_inference_steps, guidance_scale, batch_size)
    rowwise = _default_rowwise(model, batch_invariant)
    pad = model.compiled and not rowwise

    seeds, latents, errors, fallback = [], [], [], []
    with torch.inference_mode():
        # 2. Encode the prompt once (it is the same for every image)
        with exclusive_device(model.device):
            cond = _encode_prompt(model, prompt, guidance_scale)
        cond32 = None
        for start in range(0, len(images), batch_size):
            x = _images_to_tensor(images[start : start + batch_size], model.resolution)
            n = x.shape[0]
            with exclusive_device(model.device):
                forward, inverse = _schedulers(model, num_inference_steps)
                # 3. Encode the images: z_0 (checked; the VAE encoder in float32 where it failed)
                z0 = _encode(model, _pad_rows(x, batch_size) if pad else x, rowwise)[:n]
                fb: list[str | None] = [None] * n
                bad = _bad_rows(z0)
                if bad.any():
                    m32 = float32_twin(model)
                    rows = bad.nonzero().flatten()
                    if _dtype_of(model.pipe.vae.encoder) != torch.float32:
                        z0[rows.to(z0.device)] = _encode(m32, x[rows], rowwise)
                        for r in rows.tolist():
                            fb[r] = "vae"
                    if (still := _bad_rows(z0)).any():
                        raise _precision_error("inversion (VAE encoder)", prompt, (still.nonzero().flatten() + start).tolist(), model)
                # 4. Invert: z_0 -> z_T; 5. optionally regenerate z_0 from z_T for the round trip
                zt = _ddim_up(model, inverse, _pad_rows(z0, batch_size) if pad else z0, cond, rowwise)
                z0_again = _ddim_down(model, forward, zt, cond, rowwise)[:n] if reconstruction else None
                zt = zt[:n]
                bad = _bad_rows(zt) | (_bad_rows(z0_again) if reconstruction else False)
                if bad.any():
                    # the whole inversion of those images again, every component in float32
                    m32 = float32_twin(model)
                    rows = bad.nonzero().flatten()
                    if m32 is not model:
                        cond32 = cond32 or _encode_prompt(m32, prompt, guidance_scale)
                        f32, i32 = _schedulers(m32, num_inference_steps)
                        rd = rows.to(z0.device)
                        zt[rd] = _ddim_up(m32, i32, z0[rd], cond32, rowwise)
                        if reconstruction:
                            z0_again[rd] = _ddim_down(m32, f32, zt[rd], cond32, rowwise)
                        for r in rows.tolist():
                            fb[r] = "full"
                    still = _bad_rows(zt) | (_bad_rows(z0_again) if reconstruction else False)
                    if still.any():
                        raise _precision_error("inversion", prompt, (still.nonzero().flatten() + start).tolist(), model)
                if reconstruction:
                    errors += (z0_again - z0).pow(2).flatten(1).mean(1).sqrt().tolist()
            seeds.append(zt.cpu())
            latents.append(z0.cpu())
            fallback += fb
    return InversionResult(
        seeds=torch.cat(seeds),
        latents=torch.cat(latents),
        reconstruction_error=errors if reconstruction else None,
        precision_fallback=fallback,
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
    vae_batch_size: int | None = None,
) -> Iterator[GeneratedBatch]:
    """Generate one image per seed by DDIM (η = 0); yields a ``GeneratedBatch`` (a list of PIL
    images, with ``precision_fallback`` per image) per batch, in order.

    Args:
        seeds: (N, C, h, w) with (C, h, w) = model.seed_shape, float32 on any device. Used as z_T
            as given: DDIM's initial noise sigma is 1, and NAO seeds are planned at their norm.
        prompt: the text condition, one string for every seed or a sequence of strings, one per
            seed row (a batch may then mix prompts: each distinct prompt is encoded once and the
            UNet gets each row's own embedding); the negative prompt is empty. One string runs
            exactly as before (same bytes); with ``batch_invariant`` a row's bytes do not depend
            on its batch mates' prompts either.
        batch_invariant: run the models one seed at a time inside each batch, so that an image's
            bytes do not depend on batch_size or on its batch mates (verified bit-exact on CPU).
            Default: off on every device: batches stay whole, with bare diffusers' bytes at the
            same batch size. See the module docstring for what holds without it.
        vae_batch_size: latents decoded per VAE call (VAE slicing); default: the whole batch on
            CPU, on CUDA as many as keep it to 8 images of 512 px (2 at 1024 px).

    Every image is checked (non-finite latents, non-finite or constant image) and retried once in
    float32 where it fails; ``PrecisionError`` when float32 fails too (module docstring). With a
    compiled model the last batch is padded to ``batch_size`` (one shape, no recompilation).

    Inputs are checked when this is called (ValueError), not at the first ``next``. The device lock
    is held while a batch is computed and released before it is yielded.
    """
    # 1. Check inputs
    if seeds.ndim != 4 or tuple(seeds.shape[1:]) != model.seed_shape:
        raise ValueError(f"seeds must have shape (N, {', '.join(map(str, model.seed_shape))}), got {tuple(seeds.shape)}")
    if not torch.is_floating_point(seeds) or not torch.isfinite(seeds).all():
        raise ValueError("seeds must be finite floating-point values")
    row_prompts(prompt, seeds.shape[0])  # one string, or one string per seed
    _check_common(prompt if isinstance(prompt, str) else "", num_inference_steps, guidance_scale, batch_size)
    if vae_batch_size is not None and (not isinstance(vae_batch_size, int) or vae_batch_size < 1):
        raise ValueError(f"vae_batch_size must be an int >= 1 or None, got {vae_batch_size!r}")
    rowwise = _default_rowwise(model, batch_invariant)
    if vae_batch_size is None and model.device.type == "cuda":
        vae_batch_size = max(1, (8 * 512 * 512) // (model.resolution * model.resolution))
    return _generate_batches(model, seeds, prompt, num_inference_steps, guidance_scale, batch_size, rowwise,
                             vae_batch_size)


def _denoise_and_decode(model, z, cond, num_inference_steps, rowwise, vae_batch_size):
    """z_T -> (z_0, uint8 images on CPU, failed rows): non-finite z_0 or a failed image."""
    forward, _ = _schedulers(model, num_inference_steps)
    z0 = _ddim_down(model, forward, z, cond, rowwise)
    images, bad = _decode(model, z0, rowwise, vae_batch_size)
    return z0, images, bad | _bad_rows(z0)


def _generate_batches(model, seeds, prompt, num_inference_steps, guidance_scale, batch_size, rowwise, vae_batch_size):
    if seeds.shape[0] == 0:
        return
    pad = model.compiled and not rowwise
    prompts, index = row_prompts(prompt, seeds.shape[0])
    # Grad mode and the lock are entered per batch and left before each yield: a generator must not
    # leave thread-local state (inference mode) or a lock switched on in its consumer's code.
    # 2. Encode each distinct prompt once
    with torch.inference_mode(), exclusive_device(model.device):
        conds = [_encode_prompt(model, p, guidance_scale) for p in prompts]
    conds32: list[_Conditioning | None] | None = None
    for start in range(0, seeds.shape[0], batch_size):
        z = seeds[start : start + batch_size].detach().float()
        n = z.shape[0]
        rows_index = index[start : start + n]
        cond = _batch_conditioning(conds, rows_index + rows_index[-1:] * (batch_size - n) if pad else rows_index)
        with torch.inference_mode(), exclusive_device(model.device):
            # 3. Denoise z_T -> z_0 and decode, checking every sample
            z_in = _to_device(_pad_rows(z, batch_size) if pad else z, model.device)
            z0, images, bad = _denoise_and_decode(model, z_in, cond, num_inference_steps, rowwise, vae_batch_size)
            z0, images, bad = z0[:n], images[:n], bad[:n]
            fallback: list[str | None] = [None] * n
            if bad.any():
                # 4. Retry the failed samples in float32: the VAE alone where z_0 is finite, else all
                m32 = float32_twin(model)
                rows = bad.nonzero().flatten()
                vae_only = rows[~_bad_rows(z0[rows.to(z0.device)])]
                if len(vae_only) and _dtype_of(model.pipe.vae.decoder) != torch.float32:
                    fixed_images, still = _decode(m32, z0[vae_only.to(z0.device)], rowwise, vae_batch_size)
                    for r, im, s in zip(vae_only.tolist(), fixed_images, still.tolist()):
                        if not s:
                            images[r], bad[r], fallback[r] = im, False, "vae"
                rows = bad.nonzero().flatten()
                if len(rows) and m32 is not model:
                    needed = [rows_index[r] for r in rows.tolist()]
                    conds32 = conds32 or [None] * len(prompts)  # the failed rows' prompts, once each
                    for i in set(needed):
                        conds32[i] = conds32[i] or _encode_prompt(m32, prompts[i], guidance_scale)
                    cond32 = _batch_conditioning(conds32, needed)
                    _, fixed_images, still = _denoise_and_decode(
                        m32, _to_device(z[rows], model.device), cond32, num_inference_steps, rowwise, vae_batch_size
                    )
                    for r, im, s in zip(rows.tolist(), fixed_images, still.tolist()):
                        if not s:
                            images[r], bad[r], fallback[r] = im, False, "full"
                if bad.any():
                    raise _precision_error("generation", prompt, (bad.nonzero().flatten() + start).tolist(), model)
        yield GeneratedBatch(_to_pil(images), fallback)


def regenerate_latents(model: LoadedModel, seeds: torch.Tensor, prompt: str, *, num_inference_steps: int = 50,
                       guidance_scale: float = 1.0) -> torch.Tensor:
    """z_T -> z_0 by DDIM (η = 0) without decoding: the down pass ``invert_images`` runs for its
    reconstruction, for round-trip studies. (N, C, h, w) float32 on CPU; unchecked."""
    _check_common(prompt, num_inference_steps, guidance_scale, 1)
    with torch.inference_mode(), exclusive_device(model.device):
        cond = _encode_prompt(model, prompt, guidance_scale)
        forward, _ = _schedulers(model, num_inference_steps)
        return _ddim_down(model, forward, _to_device(seeds.float(), model.device), cond, False).cpu()


def warm_up(model: LoadedModel, *, batch_size: int, guidance_scale: float = 7.5, prompt: str = "") -> None:
    """Run one denoising step and one decode on a full batch, so that a compiled model compiles
    now (once per worker process and batch shape) rather than inside the first timed batch.
    Nothing is checked or returned. A no-op cost for an uncompiled model (one step)."""
    _check_common(prompt, 1, guidance_scale, batch_size)
    z = torch.randn(batch_size, *model.seed_shape, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), exclusive_device(model.device):
        cond = _encode_prompt(model, prompt, guidance_scale)
        _denoise_and_decode(model, _to_device(z, model.device), cond, 1, False, None)
