"""Baseline interpolations and centroids: LERP, SLERP, COG (Bodin et al., arXiv 2408.08558).

Seeds are vectors in the last dimension, (..., d); leading dimensions broadcast. ``t`` is a
1-D tensor of T fractions in [0, 1]; interpolations return (..., T, d).
"""

from __future__ import annotations

import torch

from ._numerics import check_prior, check_same_dim, check_seeds, check_t, out_dtype


def _pair(a, b, t, nonzero=False):
    check_seeds("a", a, nonzero=nonzero)
    check_seeds("b", b, nonzero=nonzero)
    check_same_dim("a", a, "b", b)
    t = check_t(t)
    dtype = out_dtype(a, b)
    return a.to(dtype), b.to(dtype), t.to(device=a.device, dtype=dtype), dtype


def lerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Linear interpolation (1 − t)·a + t·b → (..., T, d)."""
    a, b, t, _ = _pair(a, b, t)
    tt = t[:, None]
    return (1 - tt) * a[..., None, :] + tt * b[..., None, :]


def slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation sin((1−t)θ)/sin θ · a + sin(tθ)/sin θ · b, θ = ∠(a, b).

    Keeps the endpoints' norms (for |a| = |b| the path is a great-circle arc). Falls back to
    LERP where θ < 1e-4 (the formulas agree to O(θ²)). Undefined for antipodal seeds of
    unequal norm (sin θ → 0); computed in float64.
    """
    a, b, t, dtype = _pair(a, b, t, nonzero=True)
    a64, b64, t64 = a.double(), b.double(), t.double()
    ua = a64 / torch.linalg.vector_norm(a64, dim=-1, keepdim=True)
    ub = b64 / torch.linalg.vector_norm(b64, dim=-1, keepdim=True)
    # θ via atan2 of |ua − ub| and |ua + ub| is accurate at both ends of [0, π].
    theta = 2 * torch.atan2(torch.linalg.vector_norm(ua - ub, dim=-1),
                            torch.linalg.vector_norm(ua + ub, dim=-1))
    th = theta[..., None]
    small = th < 1e-4
    sin_th = torch.where(small, torch.ones_like(th), torch.sin(th))
    ca = torch.where(small, 1 - t64, torch.sin((1 - t64) * th) / sin_th)
    cb = torch.where(small, t64, torch.sin(t64 * th) / sin_th)
    out = ca[..., None] * a64[..., None, :] + cb[..., None] * b64[..., None, :]
    out = out.to(dtype)
    out[..., t == 0, :] = a[..., None, :].expand_as(out[..., t == 0, :])
    out[..., t == 1, :] = b[..., None, :].expand_as(out[..., t == 1, :])
    return out


def cog(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """COG/LOL interpolation for zero-mean Gaussian seeds: ((1−t)·a + t·b) / √((1−t)² + t²).

    With weights w = (1−t, t), z = Σ wᵢ xᵢ / √(Σ wᵢ²) is again N(0, I) when a, b are
    independent N(0, I) (README.md, §7 "Baselines").
    """
    a, b, t, _ = _pair(a, b, t)
    tt = t[:, None]
    scale = torch.rsqrt((1 - tt) ** 2 + tt**2)
    return ((1 - tt) * a[..., None, :] + tt * b[..., None, :]) * scale


def _check_centroid_seeds(seeds):
    check_seeds("seeds", seeds, min_dim=2, nonzero=False)
    if seeds.shape[-2] == 0:
        raise ValueError(f"seeds must have shape (..., K, d) with K ≥ 1, got {tuple(seeds.shape)}")
    return seeds.to(out_dtype(seeds))


def mean_centroid(seeds: torch.Tensor) -> torch.Tensor:
    """Euclidean mean (1/K) Σ s_k: seeds (..., K, d) → (..., d). Its norm is ~mode/√K."""
    return _check_centroid_seeds(seeds).mean(dim=-2)


def normalized_centroid(seeds: torch.Tensor, *, prior=None) -> torch.Tensor:
    """Mean direction rescaled to the prior's mode: mode · mean / |mean| → (..., d)."""
    seeds = _check_centroid_seeds(seeds)
    prior = check_prior(prior, seeds.shape[-1])
    m = seeds.double().mean(dim=-2)
    norm = torch.linalg.vector_norm(m, dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise ValueError("seeds have a zero mean: the normalized centroid's direction is undefined")
    return (float(prior.mode) * m / norm).to(seeds.dtype)


def cog_centroid(seeds: torch.Tensor) -> torch.Tensor:
    """COG centroid: weights 1/K, i.e. √K · mean → (..., d)."""
    seeds = _check_centroid_seeds(seeds)
    k = seeds.shape[-2]
    return seeds.mean(dim=-2) * k**0.5
