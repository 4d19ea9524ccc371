"""Seed health: how Gaussian an inverted seed looks (``geometry.health``, re-exported here), and
how well it gives its image back (``round_trip``, ``round_trip_gate``).

``seed_health`` records, per seed, what downstream users need to judge one:

- ``norm`` and ``norm_zscore``: |z| and its z-score under the chi law of a d-dimensional
  standard Gaussian (``geometry.ChiPrior``; |z| ≈ √(d − ½) ± 1/√2 for a Gaussian seed);
- ``channel_mean`` / ``channel_var``: per latent channel (0 and 1 for a Gaussian seed);
- ``autocorr``: per scale s = 1, 2, 4, ... (the seed average-pooled by s, times s so that a
  Gaussian stays unit-variance), the mean of the lag-1 auto-correlations along height and width
  (≈ 0 ± 1/√(d/s²) for a Gaussian seed): pix2pix-zero's regulariser's multi-scale statistic;
- ``autocorr_max``: the largest |autocorr| over the scales, one number for a gate or a table;
- ``round_trip_error``: the invert -> regenerate latent RMSE, where measured (else None).

``round_trip`` measures that error (and the pixel PSNR) for any family and inverter, and
``round_trip_gate`` applies a bound: references above it are left out of the seed pool, and the
concept fails only when fewer than it needs remain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from normguide.geometry.health import HEALTH_KEYS, autocorrelation, seed_health

__all__ = ["HEALTH_KEYS", "GateResult", "RoundTrip", "autocorrelation", "psnr", "round_trip", "round_trip_gate",
           "seed_health"]

def psnr(a: torch.Tensor, b: torch.Tensor) -> list[float]:
    """Per-image PSNR in dB of two (N, H, W, 3) uint8 batches (inf where identical)."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return [math.inf if m == 0 else 10 * math.log10(255.0 ** 2 / float(m)) for m in mse]


@dataclass
class RoundTrip:
    """Invert -> regenerate for N images: latents z_0, seeds, regenerated z_0, and the errors."""

    latents: torch.Tensor
    seeds: torch.Tensor
    regenerated: torch.Tensor
    latent_rmse: list[float]
    psnr: list[float]  # regenerated image vs the VAE's own reconstruction decode(z_0), dB
    inverter: str
    model_calls: int  # denoiser passes per image and direction (per guidance branch)


def round_trip(model, images, prompt: str, *, inverter: str | None = None, num_inference_steps: int = 50,
               guidance_scale: float = 1.0) -> RoundTrip:
    """Invert ``images`` with ``inverter`` (the family's default for None), regenerate with the
    inverter's own forward solver over the same grid, and measure latent RMSE and pixel PSNR
    (against decode(z_0), so the VAE's own error is not counted)."""
    from normguide.diffusion.families import for_model
    from normguide.diffusion.inverters import model_calls

    family = for_model(model)
    name = family.check_inverter(inverter)
    z0, seeds, again = family.round_trip(model, images, prompt, inverter=name,
                                         num_inference_steps=num_inference_steps, guidance_scale=guidance_scale)
    rmse = (again - z0).pow(2).flatten(1).mean(1).sqrt().tolist()
    with torch.inference_mode():
        ref, out = family.decode_u8(model, z0), family.decode_u8(model, again)
    return RoundTrip(z0, seeds, again, rmse, psnr(ref, out), name, model_calls(name, num_inference_steps))


@dataclass
class GateResult:
    """Which references a round-trip bound keeps (indices into the concept's references)."""

    kept: list[int]
    dropped: list[int]
    needed: int
    bound: float
    errors: list[float] = field(default_factory=list)

    @property
    def enough(self) -> bool:
        return len(self.kept) >= self.needed

    def message(self, concept_id: str) -> str:
        """One line for the log / the run summary."""
        if not self.dropped:
            return f"concept {concept_id!r}: every reference's round-trip error is within {self.bound:g}"
        worst = ", ".join(f"#{i} ({self.errors[i]:.3g})" for i in self.dropped)
        tail = "" if self.enough else f"; only {len(self.kept)} remain, the plan needs {self.needed}: the concept fails"
        return (f"concept {concept_id!r}: {len(self.dropped)} reference(s) left out of the seed pool, round-trip "
                f"error above {self.bound:g}: {worst}{tail}")


def round_trip_gate(errors: list[float], bound: float, *, needed: int = 1) -> GateResult:
    """Keep the references whose round-trip error is at most ``bound`` (a NaN error fails);
    ``enough`` says whether at least ``needed`` remain."""
    if not (bound > 0):
        raise ValueError(f"round-trip bound must be > 0, got {bound!r}")
    kept = [i for i, e in enumerate(errors) if e is not None and e <= bound]
    dropped = [i for i in range(len(errors)) if i not in kept]
    return GateResult(kept, dropped, needed, bound, [float("nan") if e is None else float(e) for e in errors])
