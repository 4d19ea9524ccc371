"""Two more seed combinators from the literature: Diff-II's circle interpolation and a
norm-keeping many-input centroid.

- **Circle interpolation** (Diff-II: Wang & Chen, "Inversion Circle Interpolation: Diffusion-based
  Image Augmentation for Data-scarce Classification", CVPR 2025; code scuwyh2000/Diff-II). Two
  DDIM inversions a, b at angle θ span a plane; Diff-II draws a point at a *uniformly random angle
  on the whole circle* through them, not only on the arc between them:

      z(φ) = sin(θ − φ)/sin θ · a + sin(φ)/sin θ · b,     φ ~ U[0, 2π)

  (its code writes the same point as ``sin((1+α)θ)/sinθ · a − sin(αθ)/sinθ · b`` with
  α ~ U[0, 2π/θ], i.e. φ = −αθ). For |a| = |b| every point has that norm (a great circle of
  the sphere of radius |a|); for unequal norms the curve is the ellipse in the plane of a and b
  through both (φ = 0 gives a, φ = θ gives b). ``radius=`` puts the points on the great circle
  through the two *directions* at a given norm instead (e.g. the prior's mode).

- **Norm-keeping centroid** (the COG/LOL family, Bodin et al. arXiv 2408.08558, made safe for
  many correlated inputs as Landolsi & Kahl, arXiv 2505.07481, argue): a weighted linear
  combination keeps its direction, and its norm is set to the weighted mean of the inputs' norms:

      c = (Σ w_i x_i) / |Σ w_i x_i| · (Σ w_i |x_i|) / (Σ w_i)

  The Euclidean mean shrinks the norm (by 1/√K for independent inputs), COG's √K·mean keeps it
  only for *independent* inputs and inflates it for correlated ones (inversions of one concept
  are correlated), this keeps the inputs' own norms for any correlation. The two-input case with
  weights (1 − t, t) is :func:`norm_keeping_interpolate` (a normalised LERP; its points lie on
  the same plane as SLERP's, at the interpolated norm). Landolsi & Kahl's own scheme may differ
  in detail; this is the property they ask for (no norm collapse or inflation with many inputs).
"""

from __future__ import annotations

import math

import torch

from ._numerics import check_same_dim, check_seeds, out_dtype


def circle_interpolate(a: torch.Tensor, b: torch.Tensor, angles: torch.Tensor, *, radius: float | None = None) -> torch.Tensor:
    """Points on the circle through ``a`` and ``b`` (Diff-II) at ``angles`` (radians, any real
    values; φ = 0 is a, φ = θ = ∠(a, b) is b) → (..., A, d).

    ``radius=None``: Diff-II's formula ``sin(θ−φ)/sinθ·a + sinφ/sinθ·b`` (norm |a| everywhere when
    |a| = |b|). ``radius=r``: ``r·(cos φ·u + sin φ·v)`` with u = a/|a| and v the unit component of
    b orthogonal to a: the great circle of the two directions at norm r. Computed in float64; a and
    b must not be (anti)parallel (their plane is then undefined).
    """
    check_seeds("a", a)
    check_seeds("b", b)
    check_same_dim("a", a, "b", b)
    angles = torch.as_tensor(angles, dtype=torch.float64)
    if angles.dim() != 1 or not bool(torch.isfinite(angles).all()):
        raise ValueError(f"angles must be a finite 1-D tensor (radians), got shape {tuple(angles.shape)}")
    if radius is not None and not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"radius must be a finite norm > 0 or None, got {radius!r}")
    dtype = out_dtype(a, b)
    a64, b64 = a.double(), b.double()
    u = a64 / torch.linalg.vector_norm(a64, dim=-1, keepdim=True)
    ub = b64 / torch.linalg.vector_norm(b64, dim=-1, keepdim=True)
    cos_th = (u * ub).sum(-1, keepdim=True)
    perp = ub - cos_th * u
    sin_th = torch.linalg.vector_norm(perp, dim=-1, keepdim=True)
    if bool((sin_th < 1e-9).any()):
        raise ValueError("a and b are (anti)parallel: the circle through them is undefined")
    phi = angles.to(a64.device)
    if radius is None:
        theta = torch.atan2(sin_th, cos_th)  # (..., 1)
        ca = torch.sin(theta - phi) / sin_th  # (..., A)
        cb = torch.sin(phi.expand_as(ca)) / sin_th
        out = ca[..., None] * a64[..., None, :] + cb[..., None] * b64[..., None, :]
    else:
        v = perp / sin_th
        out = radius * (torch.cos(phi)[:, None] * u[..., None, :] + torch.sin(phi)[:, None] * v[..., None, :])
    return out.to(dtype)


def norm_keeping_centroid(seeds: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted mean direction at the weighted mean of the inputs' norms: seeds (..., K, d) →
    (..., d). ``weights`` (K,) non-negative, not all zero; default equal."""
    check_seeds("seeds", seeds, min_dim=2)
    k = seeds.shape[-2]
    if k == 0:
        raise ValueError(f"seeds must have shape (..., K, d) with K ≥ 1, got {tuple(seeds.shape)}")
    w = torch.ones(k, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
    if w.shape != (k,) or not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"weights must be {k} finite non-negative numbers, not all zero, got {w.tolist()}")
    dtype = out_dtype(seeds)
    s = seeds.double()
    w = w.to(s.device)
    comb = (w[:, None] * s).sum(-2)
    norm = torch.linalg.vector_norm(comb, dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise ValueError("the weighted sum of the seeds is zero: the centroid's direction is undefined")
    target = (w * torch.linalg.vector_norm(s, dim=-1)).sum(-1, keepdim=True) / w.sum()
    return (comb / norm * target).to(dtype)


def norm_keeping_interpolate(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``norm_keeping_centroid`` of (a, b) with weights (1 − t, t) for each t → (..., T, d):
    the LERP point's direction at norm (1 − t)|a| + t|b|."""
    check_seeds("a", a)
    check_seeds("b", b)
    check_same_dim("a", a, "b", b)
    t = torch.as_tensor(t, dtype=torch.float64)
    if t.dim() != 1 or not bool(torch.isfinite(t).all()) or (t.numel() and (t.min() < 0 or t.max() > 1)):
        raise ValueError(f"t must be a 1-D tensor of fractions in [0, 1], got {t.tolist()[:8]}")
    dtype = out_dtype(a, b)
    a64, b64 = a.double(), b.double()
    tt = t.to(a64.device)[:, None]
    comb = (1 - tt) * a64[..., None, :] + tt * b64[..., None, :]
    norm = torch.linalg.vector_norm(comb, dim=-1, keepdim=True)
    if bool((norm == 0).any()):
        raise ValueError("a and b are antipodal with equal weight at some t: the direction is undefined")
    target = (1 - tt) * torch.linalg.vector_norm(a64, dim=-1, keepdim=True)[..., None, :] \
        + tt * torch.linalg.vector_norm(b64, dim=-1, keepdim=True)[..., None, :]
    return (comb / norm * target).to(dtype)
