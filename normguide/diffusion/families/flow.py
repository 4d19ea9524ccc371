"""Flow-matching families (SD3, FLUX, ...): sampling from given seeds and exact ODE inversion.

Notation (rectified flow, as diffusers' ``FlowMatchEulerDiscreteScheduler``):

    x_σ = (1 − σ)·z_0 + σ·ε,   σ ∈ [0, 1],   v_θ(x, σ) ≈ ε − z_0   (the transformer's output)
    σ_0 = 1 > σ_1 > … > σ_{n−1} > σ_n = 0   the scheduler's sigmas for n steps (``scheduler.sigmas``)

Generation (what the diffusers pipeline does): x_{σ_0} = the seed (no scaling: the scheduler's
``init_noise_sigma`` is 1), then Euler x_{σ_{k+1}} = x_{σ_k} + (σ_{k+1} − σ_k)·v_θ(x_{σ_k}, σ_k)
through ``scheduler.step``, then decode. The sigmas are set exactly as the pipeline sets them
(``sigma_grid``), so a seed given to the plain pipeline gives the same image.

Inversion integrates the same ODE backwards, over the sigmas reversed (0 → 1); every inverter is
deterministic and returns the end point itself (no noise mixed in, unlike the community
RF-Inversion pipeline's ``gamma``):

- ``flow-euler``: x_{k+1} = x_k + h·v(x_k, s_k), h = s_{k+1} − s_k; one model call per step.
- ``flow-midpoint`` (RF-Solver's second-order step: its Taylor term estimated by a finite
  difference is the explicit midpoint rule): x_mid = x_k + (h/2)·v(x_k, s_k),
  x_{k+1} = x_k + h·v(x_mid, s_k + h/2); two calls per step.
- ``flow-fireflow`` (FireFlow, arXiv 2412.07517): the midpoint rule with the first slope reused
  from the previous step's midpoint velocity, so one call per step (plus one at the start).

The round trip (``reconstruction=True``) regenerates with the inverter's own solver run forwards
over the same sigmas (Euler for ``flow-euler``): the RF-Solver papers' reconstruction protocol.
Seeds are stored unpacked (C, h, w); families that pack (FLUX) pack around the transformer call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from normguide.diffusion.families.base import Family

FLOW_INVERTERS: tuple[str, ...] = ("flow-euler", "flow-midpoint", "flow-fireflow")


@dataclass
class FlowConditioning:
    """What the transformer needs besides (x, σ): family-specific keyword tensors for k rows
    (k = 2 with classifier-free guidance: [unconditional; conditional]), repeated per batch."""

    kwargs: dict[str, Any]
    guidance_scale: float
    guided: bool  # classifier-free guidance: two passes, mixed

    def repeat(self, batch: int) -> dict[str, Any]:
        out = {}
        for key, value in self.kwargs.items():
            if isinstance(value, torch.Tensor) and key not in ("txt_ids", "img_ids"):
                out[key] = value.repeat_interleave(batch, dim=0)
            else:
                out[key] = value
        return out


@dataclass
class RowFlowConditioning:
    """Per-row prompt conditioning of one batch: row r takes ``conds[index[r]]`` (one encoding
    per distinct prompt); the interface of ``FlowConditioning``, plus ``select``."""

    conds: list[FlowConditioning]
    index: list[int]

    @property
    def guided(self) -> bool:
        return self.conds[0].guided

    @property
    def guidance_scale(self) -> float:
        return self.conds[0].guidance_scale

    def select(self, rows: list[int]):
        return batch_conditioning(self.conds, [self.index[r] for r in rows])

    def repeat(self, batch: int) -> dict[str, Any]:
        if batch != len(self.index):
            raise ValueError(f"per-row conditioning of {len(self.index)} rows asked for {batch}")
        out = {}
        for key, value in self.conds[0].kwargs.items():
            if isinstance(value, torch.Tensor) and key not in ("txt_ids", "img_ids"):
                parts = [c.kwargs[key] for c in self.conds]  # (k, ...) each: unconditional rows first
                out[key] = torch.cat([torch.stack([parts[i][j] for i in self.index]) for j in range(value.shape[0])])
            else:
                out[key] = value
        return out


def batch_conditioning(conds: list[FlowConditioning], index: list[int]):
    """A batch's conditioning: the prompt's own when every row has the same one (the
    single-prompt path and its bytes), else per row."""
    if len(set(index)) == 1:
        return conds[index[0]]
    return RowFlowConditioning(conds, list(index))


class FlowFamily(Family):
    """Shared by every flow-matching family; subclasses provide ``encode_prompt``,
    ``transformer_call`` and the prompt/packing details."""

    inverters = FLOW_INVERTERS
    default_inverter = "flow-euler"
    sampler = "flow matching, Euler (FlowMatchEulerDiscreteScheduler)"

    # -- loading --------------------------------------------------------------------------------
    def prepare(self, pipe) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        if not isinstance(pipe.scheduler, FlowMatchEulerDiscreteScheduler):
            pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)

    def vae_scale(self, pipe) -> int:
        return 2 ** (len(pipe.vae.config.block_out_channels) - 1)

    # -- the sigma grid, as the pipeline builds it ---------------------------------------------------
    def scheduler(self, model, num_inference_steps: int):
        """A fresh scheduler with the pipeline's timesteps for ``num_inference_steps`` set."""
        from diffusers import FlowMatchEulerDiscreteScheduler

        sched = FlowMatchEulerDiscreteScheduler.from_config(model.pipe.scheduler.config)
        self.set_timesteps(model, sched, num_inference_steps)
        sched.set_begin_index(0)
        return sched

    def set_timesteps(self, model, sched, n: int) -> None:  # pragma: no cover - per family
        raise NotImplementedError

    # -- prompt and model ------------------------------------------------------------------------
    def encode_prompt(self, model, prompt: str, guidance_scale: float) -> FlowConditioning:  # pragma: no cover
        raise NotImplementedError

    def transformer_call(self, model, x: torch.Tensor, timestep: torch.Tensor, kwargs: dict) -> torch.Tensor:  # pragma: no cover
        """v for unpacked float32 latents x (B, C, h, w) at the scheduler timestep (B,)."""
        raise NotImplementedError

    def batch_timestep(self, model, t: torch.Tensor, rows: int) -> torch.Tensor:
        """The 0-d timestep ``t`` as the transformer takes it for ``rows`` rows (flow models: the
        model's dtype)."""
        return t.expand(rows).to(model.dtype)

    def velocity(self, model, cond: FlowConditioning, x: torch.Tensor, t: torch.Tensor, rowwise: bool = False):
        """v̂(x, t) with the family's guidance (float32, x's shape); ``t`` a scheduler timestep
        (σ·num_train_timesteps), 0-d."""
        def one(rows: torch.Tensor, cond) -> torch.Tensor:
            x_in = torch.cat([rows, rows]) if cond.guided else rows
            ts = self.batch_timestep(model, t, x_in.shape[0])
            out = self.transformer_call(model, x_in.to(model.dtype), ts, cond.repeat(rows.shape[0])).float()
            if cond.guided:
                uncond, text = out.chunk(2)
                out = uncond + cond.guidance_scale * (text - uncond)
            return out

        if not rowwise or x.shape[0] == 1:
            return one(x, cond)
        if isinstance(cond, RowFlowConditioning):  # one row at a time, each with its own prompt
            return torch.cat([one(row, cond.select([r])) for r, row in enumerate(x.split(1))])
        return torch.cat([one(row, cond) for row in x.split(1)])

    # -- VAE ------------------------------------------------------------------------------------
    def encode(self, model, x: torch.Tensor) -> torch.Tensor:
        """z_0 of (B, 3, R, R) images in [-1, 1]: (posterior mean − shift)·scale, float32."""
        vae = model.pipe.vae
        z = vae.encode(x.to(model.device, next(vae.encoder.parameters()).dtype)).latent_dist.mean.float()
        shift = vae.config.get("shift_factor") or 0.0
        return (z - shift) * vae.config.scaling_factor

    def decode_u8(self, model, z: torch.Tensor) -> torch.Tensor:
        """(B, R, R, 3) uint8 on CPU: the bytes of the pipeline's ``postprocess`` ("pil")."""
        return self.decode_checked(model, z)[0]

    def vae_input(self, model, z: torch.Tensor) -> torch.Tensor:
        """Latents as the VAE decoder takes them: z / scaling_factor + shift_factor."""
        vae = model.pipe.vae
        shift = vae.config.get("shift_factor") or 0.0
        return (z.to(model.device).float() / vae.config.scaling_factor) + shift

    def decode_checked(self, model, z: torch.Tensor):
        """(uint8 images (B, R, R, 3) on CPU, (B,) bool: the image is non-finite or constant)."""
        vae = model.pipe.vae
        x = vae.decode(self.vae_input(model, z).to(next(vae.decoder.parameters()).dtype)).sample.float()
        u8 = (x * 0.5 + 0.5).clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu()
        flat = u8.flatten(1)
        return u8, _bad_rows(x) | (flat.amax(1) == flat.amin(1))

    # -- solvers ------------------------------------------------------------------------------------
    def sample(self, model, cond, x, num_inference_steps: int, solver: str = "flow-euler", rowwise: bool = False):
        """From σ = 1 (x: the seed) to σ = 0 with ``solver``; Euler goes through ``scheduler.step``
        (the pipeline's arithmetic, so the same bytes)."""
        sched = self.scheduler(model, num_inference_steps)
        if solver == "flow-euler":
            for t in sched.timesteps:
                v = self.velocity(model, cond, x, t, rowwise)
                x = sched.step(v, t, x, return_dict=False)[0]
            return x
        return self._second_order(model, cond, x, sched.sigmas.to(torch.float64), solver, rowwise, sched)

    def invert_latents(self, model, cond, z0, num_inference_steps: int, solver: str = "flow-euler", rowwise: bool = False):
        """z_0 -> the seed at σ = 1, integrating over the sigmas reversed."""
        sched = self.scheduler(model, num_inference_steps)
        sigmas = sched.sigmas.to(torch.float64).flip(0)
        if solver == "flow-euler":
            x = z0
            for k in range(len(sigmas) - 1):
                s, s_next = sigmas[k], sigmas[k + 1]
                v = self.velocity(model, cond, x, self._t(sched, s), rowwise)
                x = x + float(s_next - s) * v
            return x
        return self._second_order(model, cond, z0, sigmas, solver, rowwise, sched)

    @staticmethod
    def _t(sched, sigma) -> torch.Tensor:
        return torch.tensor(float(sigma) * sched.config.num_train_timesteps, dtype=torch.float32)

    def _second_order(self, model, cond, x, sigmas, solver, rowwise, sched):
        """Midpoint (RF-Solver) or FireFlow over ``sigmas`` (either direction)."""
        if solver not in ("flow-midpoint", "flow-fireflow"):
            raise ValueError(f"unknown flow solver {solver!r}")
        reuse = None
        for k in range(len(sigmas) - 1):
            s, s_next = sigmas[k], sigmas[k + 1]
            h = float(s_next - s)
            if solver == "flow-fireflow" and reuse is not None:
                v0 = reuse
            else:
                v0 = self.velocity(model, cond, x, self._t(sched, s), rowwise)
            x_mid = x + (h / 2) * v0
            v_mid = self.velocity(model, cond, x_mid, self._t(sched, s + h / 2), rowwise)
            x = x + h * v_mid
            reuse = v_mid
        return x

    @staticmethod
    def model_calls(solver: str, steps: int) -> int:
        """Transformer passes (per guidance branch) of ``solver`` over ``steps`` steps."""
        return {"flow-euler": steps, "flow-midpoint": 2 * steps, "flow-fireflow": steps + 1}[solver]

    # -- the family interface ---------------------------------------------------------------------------
    def invert(self, model, images, prompt, *, inverter=None, num_inference_steps=50, guidance_scale=1.0,
               batch_size=4, reconstruction=True, batch_invariant=None):
        """Images -> seeds (see ``ddim.invert_images`` for the arguments and the result). A sample
        whose z_0, seed or regenerated z_0 is non-finite is inverted again with every component in
        float32 (``precision_fallback`` "full"); ``PrecisionError`` if float32 fails too."""
        from normguide.diffusion.ddim import InversionResult
        from normguide.diffusion.loading import float32_twin

        solver = self.check_inverter(inverter)
        _check(prompt, num_inference_steps, guidance_scale, batch_size)
        if len(images) == 0:
            raise ValueError("images must hold at least one image, got an empty sequence")
        rowwise = bool(batch_invariant)
        seeds, latents, errors, fallback = [], [], [], []
        cond32 = None

        def run(m, cond, x):
            z0 = self.encode(m, x)
            zt = self.invert_latents(m, cond, z0, num_inference_steps, solver, rowwise)
            again = self.sample(m, cond, zt, num_inference_steps, solver, rowwise) if reconstruction else None
            bad = _bad_rows(z0) | _bad_rows(zt) | (_bad_rows(again) if reconstruction else False)
            return z0, zt, again, bad

        with torch.inference_mode():
            cond = self.encode_prompt(model, prompt, guidance_scale)
            for start in range(0, len(images), batch_size):
                x = images_to_tensor(images[start:start + batch_size], model.resolution)
                z0, zt, again, bad = run(model, cond, x)
                fb: list[str | None] = [None] * x.shape[0]
                if bad.any():
                    m32 = float32_twin(model)
                    rows = bad.nonzero().flatten()
                    if m32 is not model:
                        cond32 = cond32 or self.encode_prompt(m32, prompt, guidance_scale)
                        r0, rt, ra, rbad = run(m32, cond32, x[rows])
                        rd = rows.to(z0.device)
                        z0[rd], zt[rd] = r0, rt
                        if reconstruction:
                            again[rd] = ra
                        bad[rows] = rbad
                        for r in rows.tolist():
                            fb[r] = "full"
                    if bad.any():
                        raise _precision_error("inversion", prompt, (bad.nonzero().flatten() + start).tolist(), model)
                if reconstruction:
                    errors += (again - z0).pow(2).flatten(1).mean(1).sqrt().tolist()
                seeds.append(zt.cpu())
                latents.append(z0.cpu())
                fallback += fb
        return InversionResult(seeds=torch.cat(seeds), latents=torch.cat(latents),
                               reconstruction_error=errors if reconstruction else None, precision_fallback=fallback)

    def round_trip(self, model, images, prompt, *, inverter=None, num_inference_steps=50, guidance_scale=1.0):
        solver = self.check_inverter(inverter)
        with torch.inference_mode():
            cond = self.encode_prompt(model, prompt, guidance_scale)
            z0 = self.encode(model, images_to_tensor(images, model.resolution))
            zt = self.invert_latents(model, cond, z0, num_inference_steps, solver)
            again = self.sample(model, cond, zt, num_inference_steps, solver)
        return z0.cpu(), zt.cpu(), again.cpu()

    def generate(self, model, seeds, prompt, *, num_inference_steps=50, guidance_scale=7.5, batch_size=4,
                 batch_invariant=None, vae_batch_size=None):
        if seeds.ndim != 4 or tuple(seeds.shape[1:]) != tuple(model.seed_shape):
            raise ValueError(f"seeds must have shape (N, {', '.join(map(str, model.seed_shape))}), got {tuple(seeds.shape)}")
        if not torch.is_floating_point(seeds) or not torch.isfinite(seeds).all():
            raise ValueError("seeds must be finite floating-point values")
        from normguide.diffusion.ddim import row_prompts

        row_prompts(prompt, seeds.shape[0])  # one string, or one string per seed
        _check(prompt if isinstance(prompt, str) else "", num_inference_steps, guidance_scale, batch_size)
        return self._generate(model, seeds, prompt, num_inference_steps, guidance_scale, batch_size,
                              bool(batch_invariant), vae_batch_size)

    def _generate(self, model, seeds, prompt, steps, guidance_scale, batch_size, rowwise, vae_batch_size):
        from PIL import Image

        from normguide.diffusion.ddim import GeneratedBatch, row_prompts
        from normguide.diffusion.loading import float32_twin

        def run(m, cond, z):
            z0 = self.sample(m, cond, z, steps, "flow-euler", rowwise)
            size = 1 if rowwise else (vae_batch_size or z0.shape[0])
            parts = [self.decode_checked(m, part) for part in z0.split(size)]
            u8 = torch.cat([p[0] for p in parts])
            return u8, _bad_rows(z0) | torch.cat([p[1] for p in parts])

        prompts, index = row_prompts(prompt, seeds.shape[0])
        with torch.inference_mode():  # each distinct prompt encoded once
            conds = [self.encode_prompt(model, p, guidance_scale) for p in prompts]
        conds32: list | None = None
        for start in range(0, seeds.shape[0], batch_size):
            with torch.inference_mode():
                z = seeds[start:start + batch_size].detach().float().to(model.device)
                rows_index = index[start:start + z.shape[0]]
                u8, bad = run(model, batch_conditioning(conds, rows_index), z)
                fallback: list[str | None] = [None] * z.shape[0]
                if bad.any():  # the failed samples again, every component in float32
                    m32 = float32_twin(model)
                    rows = bad.nonzero().flatten()
                    if m32 is not model:
                        needed = [rows_index[r] for r in rows.tolist()]
                        conds32 = conds32 or [None] * len(prompts)  # the failed rows' prompts, once each
                        for i in set(needed):
                            conds32[i] = conds32[i] or self.encode_prompt(m32, prompts[i], guidance_scale)
                        fixed, still = run(m32, batch_conditioning(conds32, needed), z[rows.to(z.device)])
                        u8[rows], bad[rows] = fixed, still
                        for r in rows.tolist():
                            fallback[r] = "full"
                    if bad.any():
                        raise _precision_error("generation", prompt, (bad.nonzero().flatten() + start).tolist(), model)
            yield GeneratedBatch([Image.fromarray(a, "RGB") for a in u8.numpy()], fallback)


def dynamic_shift_mu(model, sched, patch_size: int, max_shift: float) -> float:
    """The pipelines' ``mu`` (``calculate_shift``, the same function in the SD3 and FLUX pipelines)
    for the token count of the model's seed shape in ``patch_size`` patches; ``max_shift`` is the
    pipeline's default where the scheduler's config has none."""
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    _, h, w = model.seed_shape
    return calculate_shift((h // patch_size) * (w // patch_size), sched.config.get("base_image_seq_len", 256),
                           sched.config.get("max_image_seq_len", 4096), sched.config.get("base_shift", 0.5),
                           sched.config.get("max_shift", max_shift))


#: The random demo transformers' output projection is scaled down after the seeded init, so that
#: their prediction is a gentle function of x (the regime in which ODE inversion closes; see
#: demo.py's UNet).
DEMO_OUT_SCALE = 0.1


def damp_output(transformer) -> None:
    """Scale a random demo transformer's output projection by :data:`DEMO_OUT_SCALE`."""
    with torch.no_grad():
        transformer.proj_out.weight.mul_(DEMO_OUT_SCALE)
        transformer.proj_out.bias.mul_(DEMO_OUT_SCALE)


def frozen(pipe, *modules):
    """``pipe`` with ``modules`` in eval mode without gradients and its progress bar off."""
    for module in modules:
        module.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _bad_rows(x: torch.Tensor) -> torch.Tensor:
    """(B,) bool on CPU: rows of x with a non-finite entry."""
    return ~torch.isfinite(x).flatten(1).all(1).cpu()


def _precision_error(what: str, prompt, rows: list[int], model):
    from normguide.diffusion.ddim import PrecisionError, prompt_rows_text

    tried = "in float32" if model.dtype == torch.float32 else f"in {str(model.dtype).removeprefix('torch.')} and again in float32"
    return PrecisionError(
        f"{what} for {prompt_rows_text(prompt, rows)} came out non-finite or as a constant image {tried}; "
        "refusing to return them (check the checkpoint's weights, the seeds' scale and the guidance scale)")


def images_to_tensor(images, resolution: int) -> torch.Tensor:
    """(B, 3, R, R) float32 in [-1, 1] of PIL images, each prepared as ``ddim.prepare_image``."""
    from normguide.diffusion.ddim import prepare_image

    arrays = [np.asarray(prepare_image(im, resolution), dtype=np.float32) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2) / 127.5 - 1.0


def _check(prompt, steps, guidance_scale, batch_size) -> None:
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    if not isinstance(steps, int) or not 1 <= steps <= 1000:
        raise ValueError(f"num_inference_steps must be an int in [1, 1000], got {steps!r}")
    if not math.isfinite(guidance_scale) or guidance_scale < 1.0:
        raise ValueError(f"guidance_scale must be >= 1 (1 = no guidance), got {guidance_scale!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
