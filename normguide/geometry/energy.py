"""Honest energies under the NAO metric w(r) = −log p(r)."""

from __future__ import annotations

import torch

from ._numerics import check_prior, check_seeds, out_dtype
from .quadrature import gauss_legendre


def segment_energies_from_grams(sq0, sq1, dot01, w_fn, quad_nodes: int = 16):
    """Σ-free building block: energy ∫₀¹ w(|x(s)|)·|p₁ − p₀| ds of straight segments p₀ → p₁,
    given only |p₀|², |p₁|² and p₀·p₁ (any broadcastable shapes, float64).

    |x(s)|² = (1−s)²|p₀|² + 2s(1−s) p₀·p₁ + s²|p₁|²;  Gauss–Legendre with ``quad_nodes`` nodes.
    """
    s, om = gauss_legendre(quad_nodes, dtype=sq0.dtype, device=sq0.device)
    length = torch.sqrt(torch.clamp(sq0 + sq1 - 2 * dot01, min=0))
    sq0, sq1, dot01 = sq0[..., None], sq1[..., None], dot01[..., None]
    r2 = (1 - s) ** 2 * sq0 + 2 * s * (1 - s) * dot01 + s**2 * sq1
    r = torch.sqrt(torch.clamp(r2, min=0))
    return length * (w_fn(r) * om).sum(-1)


def path_energy(points: torch.Tensor, *, prior=None, quad_nodes: int = 16) -> torch.Tensor:
    """Honest energy of the polyline ``points`` (..., n, d) → (...):

        E = Σᵢ |xᵢ₊₁ − xᵢ| · ∫₀¹ w(|(1−s)·xᵢ + s·xᵢ₊₁|) ds,   w(r) = −log p(r),

    the integral by Gauss–Legendre quadrature with ``quad_nodes`` (≥ 16) nodes per segment, so
    a segment cannot "tunnel" through a low-likelihood zone unpaid (README.md, §4). Only Gram
    quantities (|xᵢ|², xᵢ·xᵢ₊₁) are formed, so memory is O(n·d). Computed in float64,
    returned in the points' floating dtype.
    """
    check_seeds("points", points, min_dim=2, nonzero=False)
    if points.shape[-2] < 1:
        raise ValueError(f"points must have shape (..., n, d) with n ≥ 1, got {tuple(points.shape)}")
    if quad_nodes < 16:
        raise ValueError(f"quad_nodes must be ≥ 16, got {quad_nodes}")
    prior = check_prior(prior, points.shape[-1])
    dtype = out_dtype(points)
    x = points.to(torch.float64)
    sq = (x * x).sum(-1)
    dot = (x[..., :-1, :] * x[..., 1:, :]).sum(-1)
    w_fn = lambda r: -prior.log_prob(r).to(torch.float64)
    e = segment_energies_from_grams(sq[..., :-1], sq[..., 1:], dot, w_fn, quad_nodes)
    return e.sum(-1).to(dtype)


def centroid_energy(seeds: torch.Tensor, c: torch.Tensor, *, prior=None, n_nodes: int = 64) -> torch.Tensor:
    """Centroid objective Σ_k D(s_k, c) − log p(|c|) → (...).

    D is the NAO geodesic energy between two points, from the planar solver of ``nao`` at
    ``n_nodes`` internal nodes (the same D that ``nao_centroid`` minimises). seeds (..., K, d),
    c (..., d).
    """
    from .nao import geodesic_energy

    check_seeds("seeds", seeds, min_dim=2)
    check_seeds("c", c)
    if seeds.shape[-1] != c.shape[-1]:
        raise ValueError(f"seeds and c must have the same last dimension d, got shapes "
                         f"{tuple(seeds.shape)} and {tuple(c.shape)}")
    prior = check_prior(prior, seeds.shape[-1])
    dtype = out_dtype(seeds, c)
    d_k = geodesic_energy(seeds, c[..., None, :], prior=prior, n_nodes=n_nodes)
    r_c = torch.linalg.vector_norm(c.to(torch.float64), dim=-1)
    return (d_k.to(torch.float64).sum(-1) - prior.log_prob(r_c).to(torch.float64)).to(dtype)
