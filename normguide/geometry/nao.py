"""NAO geodesics: interpolation between seeds, solved in the plane of its endpoints
(README.md, §3 "The planar reduction" and §5 "The solver"; the 1-D solver is in ``planar``).

Notation:
    w(r) = −log p(r)                 conformal factor of the metric, p the norm prior
    E(γ) = ∫ w(|γ|) |dγ|             path energy; a geodesic minimises it
    a, b, r_a, r_b                   endpoints and their norms
    e1 = a/|a|, e2 ⟂ e1 in span(a,b) orthonormal basis of the endpoints' plane
    θ = ∠(a, b) ∈ [0, π]             angle of b in that plane

Why planar: w depends on |x| only, so the metric is rotation invariant and a geodesic lies in
the plane of its endpoints. In that plane φ is monotone along a geodesic (Clairaut: w(r)·r·sin ψ
is conserved, ψ the angle to the radius), so the geodesic is a graph r(φ): ``planar`` solves it
by Newton on N node radii.

Only the requested points are lifted to d dimensions: coefficients (T, 2) @ basis (2, d), one
batched matmul, in float32 (float64 for float64 outputs) and cast once to the output dtype. The
planes are built in float64 in chunks of pairs, so memory is the inputs, the output and one
(B, 2, d) basis, whatever B.

Degenerate inputs: a, b on one ray give the radial segment. Antipodal seeds
(|b − (b·e1)e1| < EPS["antipodal"]·|b|) have no numerically defined plane; the plane is then
spanned by a and a fixed ±1 sign pattern made orthogonal to a (``spread_orthogonal``), and
θ = π. The pattern is spread over all d
coordinates on purpose: a standard axis as e2 would put a whole norm of ~√d into one
coordinate of the interior points, far from a Gaussian seed and ruinous to round to bfloat16.
"""

from __future__ import annotations

import math

import torch

from ._numerics import EPS, check_prior, check_same_dim, check_seeds, check_t, lift_dtype, out_dtype
from .planar import DEFAULT_NODES, resample, solve_planar

_LIFT_CHUNK = 1 << 20    # elements per temporary when building planes or lifting many pairs


def geodesic_plane(a: torch.Tensor, b: torch.Tensor, antipodal_tol: float):
    """Plane of the pairs a, b (B, d), float64: r_a, r_b, θ (B,), basis e1, e2 (B, d).
    See the module doc for the nearly antipodal fallback."""
    ra = torch.linalg.vector_norm(a, dim=-1)
    rb = torch.linalg.vector_norm(b, dim=-1)
    e1 = a / ra[:, None]
    bx = (b * e1).sum(-1)
    bperp = b - bx[:, None] * e1
    by = torch.linalg.vector_norm(bperp, dim=-1)
    degenerate = by < antipodal_tol * rb
    if bool(degenerate.any()):
        u = spread_orthogonal(e1)
        e2 = torch.where(degenerate[:, None], u, bperp / torch.where(degenerate, 1.0, by)[:, None])
        theta = torch.where(degenerate, torch.where(bx > 0, 0.0, math.pi), torch.atan2(by, bx))
    else:
        e2 = bperp.div_(by[:, None])
        theta = torch.atan2(by, bx)
    return ra, rb, theta, e1, e2


def spread_orthogonal(e1: torch.Tensor) -> torch.Tensor:
    """A unit vector ⟂ e1 (B, d) spread over all coordinates: the first of the Thue–Morse sign
    pattern (−1)^popcount(i), the alternating pattern (−1)^i and, last resort, the standard axis
    most orthogonal to e1, whose part ⟂ e1 has norm ≥ 1/2, made orthogonal to e1. (The axis is
    needed only where the two patterns coincide, as for d = 2.)"""
    B, d = e1.shape
    i = torch.arange(d, device=e1.device)
    bits = torch.zeros_like(i)
    for k in range(max(1, d.bit_length())):
        bits += (i >> k) & 1
    patterns = torch.stack([1 - 2 * (bits % 2), 1 - 2 * (i % 2)]).to(e1.dtype) / math.sqrt(d)  # (2, d)
    axis = torch.zeros(B, 1, d, dtype=e1.dtype, device=e1.device)
    axis[torch.arange(B, device=e1.device), 0, e1.abs().argmin(-1)] = 1.0
    cands = torch.cat([patterns[None].expand(B, -1, -1), axis], 1)  # (B, 3, d)
    u = cands - (cands * e1[:, None]).sum(-1, keepdim=True) * e1[:, None]
    n = torch.linalg.vector_norm(u, dim=-1)
    pick = (n >= 0.5).to(torch.int64).argmax(1)  # the axis always qualifies: n² ≥ 1 − 1/d
    return u[torch.arange(B, device=e1.device), pick] / n.gather(1, pick[:, None])


def _planes(a2, b2, tol, basis_dtype):
    """``geodesic_plane`` over pairs (B, d) in chunks, so the float64 temporaries stay
    O(_LIFT_CHUNK) whatever B; the basis is kept in ``basis_dtype`` (B, 2, d) (None: not kept)."""
    B, d = a2.shape
    step = max(1, _LIFT_CHUNK // d)
    ra, rb, th = (torch.empty(B, dtype=torch.float64, device=a2.device) for _ in range(3))
    basis = None if basis_dtype is None else torch.empty(B, 2, d, dtype=basis_dtype, device=a2.device)
    for i in range(0, B, step):
        j = min(B, i + step)
        ra[i:j], rb[i:j], th[i:j], e1, e2 = geodesic_plane(a2[i:j].double(), b2[i:j].double(), tol)
        if basis is not None:
            basis[i:j, 0], basis[i:j, 1] = e1, e2
    return ra, rb, th, basis


def _prepare_pair(a, b):
    check_seeds("a", a)
    check_seeds("b", b)
    batch = check_same_dim("a", a, "b", b)
    d = a.shape[-1]
    return batch, d, a.expand(*batch, d).reshape(-1, d), b.expand(*batch, d).reshape(-1, d)


def nao_interpolate(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, *, prior=None,
                    n_nodes: int = DEFAULT_NODES) -> torch.Tensor:
    """Points of the NAO geodesic from a to b at fractions ``t`` of its Euclidean arc length.

    a, b: (..., d), batch dimensions broadcast; t: (T,) in [0, 1] → (..., T, d) in the inputs'
    dtype. t = 0 gives a and t = 1 gives b exactly. ``n_nodes`` is the internal resolution N.
    Memory: the output, the inputs, one (..., 2, d) basis and O(_LIFT_CHUNK) temporaries.
    """
    # 1. Check inputs.
    batch, d, a2, b2 = _prepare_pair(a, b)
    t = check_t(t)
    prior = check_prior(prior, d)
    dtype = out_dtype(a, b)
    if n_nodes < 4:
        raise ValueError(f"n_nodes must be ≥ 4, got {n_nodes}")
    a2, b2 = a2.to(dtype), b2.to(dtype)
    # 2. Reduce each pair to its plane (float64 scalars, basis in the lift dtype) and solve
    #    r(φ) there.
    ldt = lift_dtype(dtype)
    ra, rb, theta, basis = _planes(a2, b2, EPS["antipodal"], ldt)
    r, phi, *_ = solve_planar(ra, rb, theta, prior, n_nodes)
    # 3. Resample at fractions of arc length; lift only the T requested points, (T, 2) @ (2, d)
    #    in the lift dtype, cast once.
    rr, pp = resample(r, phi, t.to(device=a2.device, dtype=torch.float64))
    coef = torch.stack([rr * torch.cos(pp), rr * torch.sin(pp)], -1).to(ldt)  # (B, T, 2)
    if ldt == dtype:
        out = torch.bmm(coef, basis)
    else:
        B, T = coef.shape[:2]
        out = torch.empty(B, T, d, dtype=dtype, device=a2.device)
        step = max(1, _LIFT_CHUNK // max(1, T * d))
        for i in range(0, B, step):
            out[i:i + step] = torch.bmm(coef[i:i + step], basis[i:i + step])
    del basis
    # 4. Exact endpoints, and a == b gives a repeated.
    out[:, t == 0] = a2[:, None]
    out[:, t == 1] = b2[:, None]
    same = (a2 == b2).all(-1)
    if bool(same.any()):
        out[same] = a2[same][:, None, :].expand(-1, len(t), -1)
    return out.reshape(*batch, len(t), d)


def geodesic_energy(a: torch.Tensor, b: torch.Tensor, *, prior=None, n_nodes: int = DEFAULT_NODES) -> torch.Tensor:
    """D(a, b): energy of the NAO geodesic (planar polyline, ``n_nodes`` chords) → (...), float64."""
    batch, d, a2, b2 = _prepare_pair(a, b)
    prior = check_prior(prior, d)
    ra, rb, theta, _ = _planes(a2, b2, EPS["antipodal"], None)
    _, _, e, _, _ = solve_planar(ra, rb, theta, prior, n_nodes)
    return e.reshape(batch)


