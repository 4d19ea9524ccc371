"""SeedSelect: refine seeds by gradient descent through the sampler (Samuel et al., AAAI 2024,
"Generating images of rare concepts using pre-trained diffusion models"; reference code
dvirsamuel/SeedSelect, ``SeedOptimizationStableDiffusion.apply`` and ``main.optimize_seed``).

Notation:

    z            a seed (z_T), the optimised parameter, shape (C, h, w); a batch is (B, C, h, w)
    t_1 > … > t_S   the DDIM grid of S = ``num_inference_steps`` (20 in the paper)
    z_{t_k}      the latent after DDIM step k (z_{t_S} is the final latent ẑ_0)
    D(·)         VAE decode, (D(z / scaling) / 2 + 1/2) clamped to [0, 1]
    φ(·)         the feature model (CLIP's image tower + projection in the paper)
    c            the references' feature centroid: mean of φ(reference images), then L2-normalised
    μ            the references' latent centroid: mean of their scaled VAE latents
    w_1..w_3     step weights of the semantic loss over the last three steps (0.05, 0.25, 0.7)

The loss of one seed, computed on one sampling run with gradients (the reference's ``apply``):

    semantic(z)   = Σ_{j=1..3} w_j · (1 − cos(φ(D(z_{t_{S−3+j}})), c))
    appearance(z) = mean over entries of (ẑ_0 − μ)²
    loss(z)       = w_sem · semantic + w_app · appearance         (w_sem = 10, w_app = 1)

As in the reference code the semantic term decodes the latent each of the last three DDIM steps
*returns* (``prev_sample``; at the last step that is ẑ_0), not the step's x̂_0 prediction;
``semantic_on="x0"`` decodes x̂_0 (``pred_original_sample``) instead.

Optimiser: AdamW on z (torch defaults, weight decay 0.01, as the reference's
``torch.optim.AdamW([img_seed], lr=lr)``); the learning rate is divided by 10 from iteration 3 on
(the reference does this for every start, NAO seeds included). Presets (:data:`PRESETS`):
from NAO seeds lr 0.05, 5 iterations, guidance 1; from random seeds lr 0.1, 30 iterations,
guidance 7.5.

What differs from the reference, on purpose:
- batched: B seeds are one parameter of shape (B, C, h, w) and the loss is the SUM of the
  per-seed losses, so each seed's gradient, and (AdamW being element-wise) each seed's path,
  is the one it would have alone, up to float rounding;
- μ uses the posterior mean of the VAE (the reference draws a sample), so it is deterministic;
- checkpointing is per denoising step (``torch.utils.checkpoint`` around each UNet call and
  around each decode + feature pass) instead of diffusers' per-block checkpointing: only the
  step inputs are kept, the model is never modified;
- a stopping rule (``stop_below``, ``stop_tolerance``), and a per-seed fallback: a seed whose
  loss or value turns non-finite, or whose final loss exceeds ``divergence_ratio`` × its start
  loss, is given back unrefined with ``fallback = True`` (never a NaN seed);
- the loss of the final seed is evaluated (one more sampling run, without gradients), so the
  end loss reported is the loss of the seed that is returned.

Runs in float32 (the model's float32 twin when it is loaded in half precision), with every
model weight frozen (``requires_grad`` off for the call, restored after). Deterministic: no
randomness is drawn; on CPU the same seeds, batch and settings give the same bits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from normguide.diffusion.ddim import ddim_scheduler, encode_images, prepare_image, prompt_conditioning
from normguide.diffusion.devices import exclusive_device
from normguide.diffusion.loading import SD_FAMILIES, LoadedModel, float32_twin

if TYPE_CHECKING:
    from PIL import Image

#: Model families whose sampler runs with gradients here (every SD-family UNet the loader knows).
REFINABLE_FAMILIES: tuple[str, ...] = SD_FAMILIES


@dataclass(frozen=True)
class RefineSettings:
    """SeedSelect's hyper-parameters (defaults: the paper's start-from-random preset).

    Attributes:
        iterations: optimisation iterations (sampling runs with a backward pass) per seed.
        learning_rate: AdamW's learning rate on the seed.
        lr_decay_at: iteration from which the learning rate is multiplied by ``lr_decay_factor``
            (the reference: 3); None: constant.
        lr_decay_factor: that multiplier (the reference: 0.1).
        weight_decay: AdamW's weight decay (torch's default 0.01, which the reference keeps).
        semantic_weight, appearance_weight: w_sem, w_app (10 and 1).
        step_weights: weights of the semantic loss over the last len(step_weights) DDIM steps,
            oldest first (0.05, 0.25, 0.7).
        num_inference_steps: DDIM steps of each sampling run (20).
        guidance_scale: classifier-free guidance of those runs (7.5 from random, 1 from NAO).
        semantic_on: ``"sample"`` (decode the step's output latent, as the reference) or ``"x0"``.
        stop_below: a seed stops once its loss is at or below this.
        stop_tolerance: a seed stops once its loss improved by less than this fraction since the
            previous iteration.
        divergence_ratio: a final loss above this multiple of the start loss counts as diverged.
        gradient_checkpointing: recompute each step's activations in the backward pass.
    """

    iterations: int = 30
    learning_rate: float = 0.1
    lr_decay_at: int | None = 3
    lr_decay_factor: float = 0.1
    weight_decay: float = 0.01
    semantic_weight: float = 10.0
    appearance_weight: float = 1.0
    step_weights: tuple[float, ...] = (0.05, 0.25, 0.7)
    num_inference_steps: int = 20
    guidance_scale: float = 7.5
    semantic_on: str = "sample"
    stop_below: float | None = None
    stop_tolerance: float | None = None
    divergence_ratio: float = 2.0
    gradient_checkpointing: bool = True

    def check(self) -> None:
        """ValueError naming the first bad setting."""
        def bad(name, why):
            raise ValueError(f"refine.{name} {why}, got {getattr(self, name)!r}")

        if not isinstance(self.iterations, int) or self.iterations < 0:
            bad("iterations", "must be an int >= 0")
        for name in ("learning_rate", "lr_decay_factor", "divergence_ratio"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                bad(name, "must be a finite number > 0")
        for name in ("weight_decay", "semantic_weight", "appearance_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                bad(name, "must be a finite number >= 0")
        if self.semantic_weight == 0 and self.appearance_weight == 0:
            bad("semantic_weight", "and refine.appearance_weight must not both be 0")
        if not self.step_weights or any(not (math.isfinite(w) and w >= 0) for w in self.step_weights):
            bad("step_weights", "must be a non-empty list of finite weights >= 0")
        if not 1 <= self.num_inference_steps <= 1000:
            bad("num_inference_steps", "must be in [1, 1000]")
        if self.num_inference_steps < len(self.step_weights):
            bad("num_inference_steps", f"must be at least len(refine.step_weights) = {len(self.step_weights)}")
        if not (math.isfinite(self.guidance_scale) and 1.0 <= self.guidance_scale <= 100.0):
            bad("guidance_scale", "must be between 1 (no guidance) and 100")
        if self.semantic_on not in ("sample", "x0"):
            bad("semantic_on", "must be 'sample' or 'x0'")
        if self.lr_decay_at is not None and self.lr_decay_at < 0:
            bad("lr_decay_at", "must be >= 0 or null")
        if self.stop_below is not None and not math.isfinite(self.stop_below):
            bad("stop_below", "must be finite or null")
        if self.stop_tolerance is not None and not (math.isfinite(self.stop_tolerance) and self.stop_tolerance >= 0):
            bad("stop_tolerance", "must be >= 0 or null")


#: The paper's two settings (``main.py``): refining NAO seeds, and refining random seeds.
PRESETS: dict[str, RefineSettings] = {
    "nao": RefineSettings(iterations=5, learning_rate=0.05, guidance_scale=1.0),
    "random": RefineSettings(iterations=30, learning_rate=0.1, guidance_scale=7.5),
}


@dataclass(frozen=True)
class RefineTargets:
    """What the loss pulls towards: ``features`` (D,), the L2-normalised mean feature of the
    references (c), and ``latent`` (1, C, h, w), their mean scaled VAE latent (μ)."""

    features: torch.Tensor
    latent: torch.Tensor


@dataclass
class RefineResult:
    """Per seed (row-aligned with the input seeds).

    Attributes:
        seeds: (N, C, h, w) float32 on CPU: the refined seeds (the input seed where ``fallback``).
        iterations: optimisation steps applied to each seed (fewer than asked where it stopped).
        semantic_start, appearance_start: the losses of the input seed.
        semantic_end, appearance_end: the losses of the returned seed.
        fallback: the seed diverged or turned non-finite and was given back unrefined.
        seconds: wall-clock time of the seed's batch, divided among its seeds.
        semantic_history, appearance_history: (N, iterations + 1): the losses of the seed after
            i steps, i = 0..iterations; NaN after a seed stopped (its value stays the last one).
    """

    seeds: torch.Tensor
    iterations: list[int]
    semantic_start: list[float]
    semantic_end: list[float]
    appearance_start: list[float]
    appearance_end: list[float]
    fallback: list[bool]
    seconds: list[float]
    semantic_history: torch.Tensor = field(repr=False)
    appearance_history: torch.Tensor = field(repr=False)

    @staticmethod
    def concat(parts: Sequence[RefineResult]) -> RefineResult:
        width = max(p.semantic_history.shape[1] for p in parts)

        def pad(h: torch.Tensor) -> torch.Tensor:
            return F.pad(h, (0, width - h.shape[1]), value=float("nan"))

        lists = {name: [v for p in parts for v in getattr(p, name)] for name in (
            "iterations", "semantic_start", "semantic_end", "appearance_start", "appearance_end", "fallback", "seconds")}
        return RefineResult(seeds=torch.cat([p.seeds for p in parts]), **lists,
                            semantic_history=torch.cat([pad(p.semantic_history) for p in parts]),
                            appearance_history=torch.cat([pad(p.appearance_history) for p in parts]))


def check_refinable(family: str, *, field: str = "refine") -> None:
    """ValueError naming ``field`` when the model family's sampler cannot run with gradients here."""
    if family not in REFINABLE_FAMILIES:
        raise ValueError(
            f"{field}: refinement needs a model whose sampler can backpropagate to the seed; the {family!r} "
            f"family cannot here (refinable families: {', '.join(REFINABLE_FAMILIES)}); turn refinement off"
        )


# 1. Images and targets -----------------------------------------------------------------------------


def images_to_unit_tensor(images: Sequence[Image.Image], resolution: int) -> torch.Tensor:
    """(B, 3, R, R) float32 in [0, 1]: ``prepare_image`` to the model's resolution; the range
    decoded images have, so references and samples reach φ the same way."""
    import numpy as np

    arrays = [np.asarray(prepare_image(im, resolution), dtype=np.float32) / 255.0 for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def reference_targets(model: LoadedModel, references: Sequence[Image.Image], features: torch.nn.Module) -> RefineTargets:
    """c and μ of the reference images (see the module docstring), float32 on CPU."""
    if len(references) == 0:
        raise ValueError("references must hold at least one image")
    m = float32_twin(model)
    with torch.no_grad(), exclusive_device(m.device):
        latents = encode_images(m, references)  # posterior means, scaled: z_0 of each reference
        feats = features.to(m.device)(images_to_unit_tensor(references, m.resolution).to(m.device)).float()
    c = feats.mean(0)
    return RefineTargets(features=(c / c.norm()).cpu(), latent=latents.mean(0, keepdim=True).float().cpu())


# 2. The sampler with gradients -----------------------------------------------------------------------


@contextmanager
def _frozen(modules: Sequence[torch.nn.Module]) -> Iterator[None]:
    """requires_grad off for every parameter of ``modules`` (no weight gradients are built or
    stored); the previous flags are restored on the way out."""
    params = {id(p): p for m in modules for p in m.parameters()}.values()
    flags = [(p, p.requires_grad) for p in params]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class _Sampler:
    """One sampling run of a batch of seeds: per-seed semantic and appearance losses."""

    def __init__(self, model: LoadedModel, prompt: str, settings: RefineSettings, features: torch.nn.Module,
                 targets: RefineTargets):
        self.model, self.s, self.features = model, settings, features
        self.cond = prompt_conditioning(model, prompt, settings.guidance_scale)
        self.c = targets.features.to(model.device).float()
        self.mu = targets.latent.to(model.device).float()
        self.weights = torch.tensor(settings.step_weights, dtype=torch.float32, device=model.device)
        vae = model.pipe.vae
        self.scaling = float(vae.config.scaling_factor)
        mean, std = vae.config.get("latents_mean"), vae.config.get("latents_std")
        self.latent_mean = None if mean is None else torch.tensor(mean, device=model.device).view(1, -1, 1, 1)
        self.latent_std = None if std is None else torch.tensor(std, device=model.device).view(1, -1, 1, 1)

    def _eps(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        unet_in = torch.cat([z, z]) if self.cond.guided else z
        out = self.model.pipe.unet(unet_in, t, **self.cond.unet_kwargs(z.shape[0], torch.float32)).sample
        if self.cond.guided:
            uncond, text = out.chunk(2)
            out = uncond + self.cond.guidance_scale * (text - uncond)
        return out

    def _semantic(self, z: torch.Tensor) -> torch.Tensor:
        """(B,) 1 − cos(φ(D(z)), c)."""
        x = z / self.scaling
        if self.latent_mean is not None:
            x = x * self.latent_std + self.latent_mean
        image = (self.model.pipe.vae.decode(x).sample / 2 + 0.5).clamp(0, 1)
        f = self.features(image).float()
        return 1.0 - F.normalize(f, dim=-1) @ self.c

    def _maybe_checkpoint(self, fn, *args):
        if self.s.gradient_checkpointing and torch.is_grad_enabled():
            return checkpoint(fn, *args, use_reentrant=False)
        return fn(*args)

    def __call__(self, seeds: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(semantic (B,), appearance (B,)) of ``seeds`` (B, C, h, w) on the model's device."""
        scheduler = ddim_scheduler(self.model, self.s.num_inference_steps)
        timesteps = scheduler.timesteps.to(self.model.device)
        n, k = len(timesteps), len(self.s.step_weights)
        z, terms = seeds, []
        for i in range(n):
            eps = self._maybe_checkpoint(self._eps, z, timesteps[i])
            out = scheduler.step(eps, int(timesteps[i]), z, eta=0.0)
            z = out.prev_sample
            if i >= n - k:
                target = z if self.s.semantic_on == "sample" else out.pred_original_sample
                terms.append(self._maybe_checkpoint(self._semantic, target))
        semantic = torch.stack(terms, dim=1) @ self.weights
        appearance = (z - self.mu).pow(2).flatten(1).mean(1)
        return semantic, appearance


# 3. The optimisation -----------------------------------------------------------------------------


def refine_seeds(
    model: LoadedModel,
    seeds: torch.Tensor,
    prompt: str,
    features: torch.nn.Module,
    targets: RefineTargets,
    settings: RefineSettings = RefineSettings(),
    *,
    batch_size: int = 8,
    on_iteration: Callable[[int, torch.Tensor, torch.Tensor], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> RefineResult:
    """SeedSelect on each seed, ``batch_size`` seeds at a time (module docstring).

    Args:
        seeds: (N, C, h, w) with (C, h, w) = model.seed_shape; finite.
        prompt: the text condition (the negative prompt is empty, as generation's).
        features: φ: (B, 3, H, W) images in [0, 1] -> (B, D) features, differentiable; moved to
            the model's device and frozen.
        targets: c and μ (:func:`reference_targets`).
        on_iteration: called as ``on_iteration(i, rows, seeds_i)`` after each batch reached i
            steps (i = 0 before the first), with the batch's row indices (LongTensor) and a CPU
            copy of its seeds: for benchmarks that sample the trajectory.
        log: receives one line per fallback (a warning).

    Returns:
        :class:`RefineResult`. Never a non-finite seed: a seed whose loss or value turns
        non-finite, or whose final loss exceeds ``divergence_ratio`` × its start loss, falls back.
    """
    # 1. Check inputs
    settings.check()
    check_refinable(model.family)
    if seeds.ndim != 4 or tuple(seeds.shape[1:]) != tuple(model.seed_shape):
        raise ValueError(f"seeds must have shape (N, {', '.join(map(str, model.seed_shape))}), got {tuple(seeds.shape)}")
    if not torch.is_floating_point(seeds) or not torch.isfinite(seeds).all():
        raise ValueError("seeds must be finite floating-point values")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if targets.latent.shape[1:] != seeds.shape[1:]:
        raise ValueError(f"targets.latent has shape {tuple(targets.latent.shape)}, expected (1, {', '.join(map(str, seeds.shape[1:]))})")
    m = float32_twin(model)  # fp32, uncompiled
    features = features.to(m.device).eval()
    for p in features.parameters():
        p.requires_grad_(False)
    modules = [mod for mod in m.pipe.components.values() if isinstance(mod, torch.nn.Module)]

    parts = []
    with exclusive_device(m.device), _frozen(modules):
        sampler = _Sampler(m, prompt, settings, features, targets)
        for start in range(0, seeds.shape[0], batch_size):
            rows = torch.arange(start, min(start + batch_size, seeds.shape[0]))
            parts.append(_refine_batch(m, sampler, seeds[rows].detach().float(), rows, settings, on_iteration, log))
    return RefineResult.concat(parts)


def _refine_batch(model, sampler, z0: torch.Tensor, rows, s: RefineSettings, on_iteration, log) -> RefineResult:
    t0 = time.perf_counter()
    b, n_it = z0.shape[0], s.iterations
    sem_hist = torch.full((b, n_it + 1), float("nan"), dtype=torch.float64)
    app_hist = torch.full((b, n_it + 1), float("nan"), dtype=torch.float64)
    z = torch.nn.Parameter(z0.to(model.device).clone())
    # the reference's optimiser: AdamW with torch's defaults but the learning rate
    opt = torch.optim.AdamW([z], lr=s.learning_rate, weight_decay=s.weight_decay)
    active = torch.ones(b, dtype=torch.bool)  # still being optimised
    failed = torch.zeros(b, dtype=torch.bool)  # non-finite: falls back to z0
    steps = torch.zeros(b, dtype=torch.long)
    kept = z0.clone()  # the value of each seed that stopped (or the start, for a failed one)
    prev_loss = torch.full((b,), float("inf"), dtype=torch.float64)

    def record(i: int, sem: torch.Tensor, app: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Store the losses of the seeds in ``mask`` after i steps; returns their total loss."""
        sem, app = sem.detach().double().cpu(), app.detach().double().cpu()
        sem_hist[mask, i], app_hist[mask, i] = sem[mask], app[mask]
        return s.semantic_weight * sem + s.appearance_weight * app

    for i in range(n_it + 1):
        if on_iteration is not None:
            on_iteration(i, rows, torch.where(active.view(-1, 1, 1, 1), z.detach().cpu(), kept))
        last = i == n_it
        if last or not active.any():
            if last and active.any():  # the loss of the final seeds, without gradients
                with torch.no_grad():
                    sem, app = sampler(z.detach())
                total = record(i, sem, app, active)
                bad = active & ~torch.isfinite(total)
                failed |= bad
                kept[active] = z.detach().cpu()[active]
            break
        # 2. One sampling run with gradients: the losses of the current seeds (after i steps)
        opt.zero_grad(set_to_none=True)
        sem, app = sampler(z)
        total = record(i, sem, app, active)
        finite = torch.isfinite(total)
        # 3. Stopping: non-finite (fallback), below the target, or no longer improving
        newly_failed = active & ~finite
        stop = newly_failed.clone()
        if s.stop_below is not None:
            stop |= active & finite & (total <= s.stop_below)
        if s.stop_tolerance is not None and i > 0:
            stop |= active & finite & (prev_loss - total < s.stop_tolerance * prev_loss.abs())
        failed |= newly_failed
        kept[stop] = z.detach().cpu()[stop]
        active &= ~stop
        prev_loss = torch.where(finite, total, prev_loss)
        if not active.any():
            continue  # the next pass records nothing more and ends
        # 4. Backward through the sampler (the SUM of the active seeds' losses: per-seed gradients)
        mask = active.to(model.device)
        per_seed = s.semantic_weight * sem + s.appearance_weight * app
        loss = torch.where(mask, per_seed, torch.zeros_like(per_seed)).sum()
        loss.backward()
        # 5. AdamW step, with the reference's schedule (lr / 10 from iteration lr_decay_at on)
        lr = s.learning_rate * (s.lr_decay_factor if s.lr_decay_at is not None and i >= s.lr_decay_at else 1.0)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.no_grad():
            z.grad[~mask] = 0.0
        opt.step()
        with torch.no_grad():
            z[~mask] = kept.to(model.device)[~mask]
            newly_bad = mask & ~torch.isfinite(z).flatten(1).all(1)
        if newly_bad.any():
            nb = newly_bad.cpu()
            failed |= nb
            active &= ~nb
        steps[active] += 1

    # 6. Divergence and fallbacks
    start_total = s.semantic_weight * sem_hist[:, 0] + s.appearance_weight * app_hist[:, 0]
    end_idx = torch.tensor([_last_finite(sem_hist[r]) for r in range(b)])
    sem_end = sem_hist[torch.arange(b), end_idx]
    app_end = app_hist[torch.arange(b), end_idx]
    end_total = s.semantic_weight * sem_end + s.appearance_weight * app_end
    diverged = ~failed & (end_total > s.divergence_ratio * start_total)
    fallback = failed | diverged | ~torch.isfinite(start_total)
    out = kept.clone()
    out[fallback] = z0[fallback]
    if log is not None:
        for r in fallback.nonzero().flatten().tolist():
            why = "its loss or value turned non-finite" if failed[r] else (
                f"its loss rose from {start_total[r]:.4g} to {end_total[r]:.4g}")
            log(f"refinement of seed {int(rows[r])} diverged ({why}); its unrefined seed is used")
    sem_end = torch.where(fallback, sem_hist[:, 0], sem_end)
    app_end = torch.where(fallback, app_hist[:, 0], app_end)
    seconds = (time.perf_counter() - t0) / b
    return RefineResult(
        seeds=out.contiguous(), iterations=steps.tolist(),
        semantic_start=sem_hist[:, 0].tolist(), semantic_end=sem_end.tolist(),
        appearance_start=app_hist[:, 0].tolist(), appearance_end=app_end.tolist(),
        fallback=fallback.tolist(), seconds=[seconds] * b,
        semantic_history=sem_hist, appearance_history=app_hist,
    )


def _last_finite(h: torch.Tensor) -> int:
    idx = torch.isfinite(h).nonzero().flatten()
    return int(idx[-1]) if len(idx) else 0


def with_overrides(settings: RefineSettings, **changes) -> RefineSettings:
    """``settings`` with the given fields replaced (None values are ignored), checked."""
    out = replace(settings, **{k: v for k, v in changes.items() if v is not None})
    out.check()
    return out


class ClipImageFeatures(torch.nn.Module):
    """φ from a ``transformers.CLIPModel``: CLIP's image embedding (vision tower + projection) of
    images in [0, 1], differentiable, preprocessed as the reference does for generated images:
    bicubic resize to the processor's input size, then normalised with its mean and std.

    Args:
        clip: a loaded ``CLIPModel`` (only its vision tower and projection are kept).
        image_mean, image_std: the image processor's per-channel statistics.
        size: the square input side (the processor's ``crop_size``/``size``).
    """

    def __init__(self, clip, image_mean: Sequence[float], image_std: Sequence[float], size: int, name: str = "CLIP"):
        super().__init__()
        self.vision_model, self.visual_projection = clip.vision_model, clip.visual_projection
        self.register_buffer("mean", torch.tensor(list(image_mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(image_std), dtype=torch.float32).view(1, -1, 1, 1))
        self.size = int(size)
        self.name = name

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(images.float(), size=(self.size, self.size), mode="bicubic", align_corners=False)
        x = (x - self.mean) / self.std
        pooled = self.vision_model(pixel_values=x.to(self.visual_projection.weight.dtype)).pooler_output
        return self.visual_projection(pooled)
