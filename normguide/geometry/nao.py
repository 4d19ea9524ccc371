"""NAO geodesics and centroids, solved in the plane of their endpoints.

Notation (NAO.md):
    w(r) = −log p(r)                 conformal factor of the metric, p the norm prior
    E(γ) = ∫ w(|γ|) |dγ|             path energy; a geodesic minimises it
    a, b, r_a, r_b                   endpoints and their norms
    e1 = a/|a|, e2 ⟂ e1 in span(a,b) orthonormal basis of the endpoints' plane
    θ = ∠(a, b) ∈ [0, π]             angle of b in that plane
    (r_i, φ_i), i = 0..N             polyline nodes in polar coordinates of the plane

Why planar: w depends on |x| only, so the metric is rotation invariant and a geodesic lies in
the plane of its endpoints (NAO.md). In that plane φ is monotone along a geodesic (Clairaut:
w(r)·r·sin ψ is conserved, ψ the angle to the radius), so the geodesic is a graph r(φ).

Discretisation: φ_i = θ·(1 − cos(πi/N))/2 (Chebyshev spacing; the geodesic leaves an atypical
endpoint almost radially and joins the shell in a boundary layer of width ~1/mode rad), and the
node radii r_1..r_{N−1} minimise the *honest* energy of the planar polyline (w integrated along
each chord by Gauss–Legendre). That is a smooth 1-D problem with a tridiagonal Hessian, solved
batched by damped Newton in float64 from the best of three starting curves (the LERP chord, the
polar interpolation r = lerp(r_a, r_b), and the prior's shell), so the solution is never worse
than the LERP chord on the same nodes.

Only the requested points are lifted to d dimensions: coefficients (T, 2) @ basis (2, d), one
batched matmul. The planes are built in float64 in chunks of pairs and kept in the output dtype,
so memory is the inputs, the output and one (B, 2, d) basis, whatever B.

Centroid: in an orthonormal basis of span(seeds) (one QR) the objective needs K scalars per
seed (|s_k|, |c|, θ_k), so nothing d-sized runs inside the optimisation. The planar solver also
returns ∂D/∂|c| and ∂D/∂θ at its stationary interior radii (envelope theorem), BFGS warm-starts
each inner solve from the previous iterate's curves, and runs first at a coarse inner resolution
(_CENTROID_COARSE_NODES), then polishes at ``n_nodes``.

Degenerate inputs: a, b on one ray (θ below EPS["parallel"]) give the radial segment. Nearly
antipodal seeds (|b − (b·e1)e1| < EPS["antipodal"]·|b|) have no numerically defined plane; the
plane is then span(a, e_j) with j the first index of the smallest |a_j| (the standard axis most
orthogonal to a), and θ = π.
"""

from __future__ import annotations

import functools
import math

import torch

from ._numerics import (check_prior, check_same_dim, check_seeds, check_t, eps, out_dtype)
from .energy import gauss_legendre

DEFAULT_NODES = 64       # internal polyline nodes N per geodesic
INTERNAL_QUAD = 8        # Gauss–Legendre nodes per internal (short) chord
_ALPHAS = (0.5, 0.25, 0.1, 0.03, 0.01)  # line-search fallbacks when the full Newton step fails
_NEWTON_STOP = 1e-9      # stop after a full step whose Newton decrement is < this·E (the step
                         # then leaves an error ~ decrement², far below float64 resolution of E)
_CENTROID_COARSE_NODES = 32  # inner resolution of the centroid's BFGS before the polish
_CENTROID_FTOL = 1e-9    # BFGS stops after an accepted step that lowers F by less than this·F
_LIFT_CHUNK = 1 << 20    # elements per float64 temporary when building the planes of many pairs


def _w_fn(prior):
    """w(r) = −log p(r) in float64 for radii r > 0 (a fast path for ``ChiPrior``)."""
    if hasattr(prior, "neg_log_prob64"):
        return prior.neg_log_prob64
    return lambda r: -prior.log_prob(r).to(torch.float64)


@functools.lru_cache(maxsize=16)
def _grid(n_nodes: int, device) -> torch.Tensor:
    """Chebyshev fractions s_i = (1 − cos(πi/N))/2, i = 0..N (cached; do not modify)."""
    i = torch.arange(n_nodes + 1, dtype=torch.float64, device=device)
    s = (1 - torch.cos(math.pi * i / n_nodes)) / 2
    s[0], s[-1] = 0.0, 1.0
    return s


def planar_energy(r: torch.Tensor, phi: torch.Tensor, w_fn, quad: int = INTERNAL_QUAD) -> torch.Tensor:
    """Honest energy of planar polylines with polar nodes (r, φ) (..., N+1) → (...).

    Chord i: with h = 2·rᵢ·rᵢ₊₁·(1 − cos Δφ) = 4·rᵢ·rᵢ₊₁·sin²(Δφ/2) (no cancellation),
    |chord|² = (rᵢ − rᵢ₊₁)² + h and |x(s)|² = ((1−s)rᵢ + s·rᵢ₊₁)² − s(1−s)·h.
    """
    s, om = gauss_legendre(quad, dtype=r.dtype, device=r.device)
    r0, r1 = r[..., :-1], r[..., 1:]
    h = 4 * r0 * r1 * torch.sin((phi[..., 1:] - phi[..., :-1]) / 2) ** 2
    length = torch.sqrt(torch.clamp((r0 - r1) ** 2 + h, min=1e-300))
    r0, r1, h = r0[..., None], r1[..., None], h[..., None]
    rad = torch.sqrt(torch.clamp(((1 - s) * r0 + s * r1) ** 2 - s * (1 - s) * h, min=1e-300))
    return (length * (w_fn(rad) * om).sum(-1)).sum(-1)


def _w_derivs(prior, r):
    """w, w', w'' at radii r (float64): analytic where the prior provides them, else autograd."""
    if hasattr(prior, "neg_log_prob_derivatives"):
        return prior.neg_log_prob_derivatives(r)
    x = r.detach().requires_grad_(True)
    with torch.enable_grad():
        w = -prior.log_prob(x).to(torch.float64)
        (w1,) = torch.autograd.grad(w.sum(), x, create_graph=True)
        (w2,) = torch.autograd.grad(w1.sum(), x)
    return w.detach(), w1.detach(), w2


def _polyline_terms(r, c, prior, quad=INTERNAL_QUAD):
    """Energy of planar polylines with node radii r (B, N+1) and chord constants
    c = 4·sin²(Δφ/2) (B, N), and its derivatives in closed form (see ``planar_energy``).

    Per chord: E = L·W, L² = (r0 − r1)² + c·r0·r1, W = Σ_q ω_q w(ρ_q),
    ρ_q² = ((1−s)r0 + s·r1)² − s(1−s)·c·r0·r1.

    Returns E (B,), the gradient (B, N−1) and the tridiagonal Hessian (diagonal (B, N−1),
    off-diagonal (B, N−2)) with respect to the interior radii r_1..r_{N−1}, ∂E/∂r_N (B,) and
    ∂E/∂c per chord (B, N) (the last two for the centroid's envelope gradient).
    """
    s, om = gauss_legendre(quad, dtype=r.dtype, device=r.device)
    r0, r1 = r[:, :-1], r[:, 1:]
    r01 = r0 * r1
    dr = r0 - r1
    L2 = torch.clamp(dr * dr + c * r01, min=1e-300)
    L = torch.sqrt(L2)
    iL, iL3 = 1 / L, 1 / (L * L2)
    a0, a1 = 2 * dr + c * r1, c * r0 - 2 * dr  # ∂L²/∂r0, ∂L²/∂r1
    L_0, L_1 = 0.5 * a0 * iL, 0.5 * a1 * iL
    L_00 = iL - 0.25 * a0 * a0 * iL3
    L_11 = iL - 0.25 * a1 * a1 * iL3
    L_01 = 0.5 * (c - 2) * iL - 0.25 * a0 * a1 * iL3
    R0, R1, C, R01 = r0[..., None], r1[..., None], c[..., None], r01[..., None]
    st = s * (1 - s)
    m = (1 - s) * R0 + s * R1
    A = torch.clamp(m * m - st * C * R01, min=1e-300)
    rho = torch.sqrt(A)
    irho = 1 / rho
    irho3 = irho / A
    stC = st * C
    A0, A1 = 2 * (1 - s) * m - stC * R1, 2 * s * m - stC * R0
    p0, p1 = 0.5 * A0 * irho, 0.5 * A1 * irho
    p00 = (1 - s) ** 2 * irho - 0.25 * A0 * A0 * irho3
    p11 = s**2 * irho - 0.25 * A1 * A1 * irho3
    p01 = 0.5 * (2 * st - stC) * irho - 0.25 * A0 * A1 * irho3
    w, w1, w2 = _w_derivs(prior, rho)
    ow1, ow2 = om * w1, om * w2
    W = (om * w).sum(-1)
    W_0, W_1 = (ow1 * p0).sum(-1), (ow1 * p1).sum(-1)
    W_00 = (ow2 * p0 * p0 + ow1 * p00).sum(-1)
    W_11 = (ow2 * p1 * p1 + ow1 * p11).sum(-1)
    W_01 = (ow2 * p0 * p1 + ow1 * p01).sum(-1)
    W_c = -0.5 * (ow1 * st * R01 * irho).sum(-1)
    E = (L * W).sum(-1)
    g0, g1 = L_0 * W + L * W_0, L_1 * W + L * W_1
    h00 = L_00 * W + 2 * L_0 * W_0 + L * W_00
    h01 = L_01 * W + L_0 * W_1 + L_1 * W_0 + L * W_01
    h11 = L_11 * W + 2 * L_1 * W_1 + L * W_11
    E_c = 0.5 * r01 * iL * W + L * W_c
    return E, g1[:, :-1] + g0[:, 1:], h11[:, :-1] + h00[:, 1:], h01[:, 1:-1], g1[:, -1], E_c


def _solve_planar(ra, rb, theta, prior, n_nodes=DEFAULT_NODES, r_init=None, max_iter=60):
    """Minimise the planar polyline energy over the interior radii. Inputs (B,) float64.

    Returns radii (B, N+1), angles (B, N+1), energies (B,), and ∂E/∂r_b, ∂E/∂θ (B,) at the
    solution (envelope theorem: the interior radii are stationary). ``r_init`` (B, N+1), if
    given, is the only starting curve (the centroid's warm start; its end radii are replaced).
    """
    w_fn, mode = _w_fn(prior), float(prior.mode)
    B, dev = ra.shape[0], ra.device
    s = _grid(n_nodes, dev)
    ds = s[1:] - s[:-1]
    phi = theta[:, None] * s
    half = theta[:, None] * ds / 2
    c = 4 * torch.sin(half) ** 2  # (B, N)
    dc_dtheta = 2 * torch.sin(2 * half) * ds  # ∂c/∂θ
    radial = theta < 1e-13  # on one ray: the radial segment is the geodesic (nothing to solve)

    # 1. Starting curve. Cold: the best of the polar lerp r = lerp(r_a, r_b), the LERP chord
    #    r(φ) = r_a r_b sinθ / (r_b sin(θ−φ) + r_a sinφ) and the shell r = mode, so the result is
    #    never worse than the LERP chord on the same nodes.
    if r_init is None:
        lin = ra[:, None] + (rb - ra)[:, None] * s
        sin_t = torch.sin(theta)[:, None]
        den = rb[:, None] * torch.sin(theta[:, None] - phi) + ra[:, None] * torch.sin(phi)
        chord = torch.where(den > 0, ra[:, None] * rb[:, None] * sin_t / torch.where(den > 0, den, 1.0), lin)
        chord = torch.where(radial[:, None], lin, chord)
        cands = torch.stack([lin, chord, torch.full_like(lin, mode)], 1)  # (B, 3, N+1)
        cands[..., 0], cands[..., -1] = ra[:, None], rb[:, None]
        e = torch.nan_to_num(planar_energy(cands, phi[:, None, :], w_fn), nan=math.inf)
        r = cands[torch.arange(B, device=dev), e.argmin(1)]
    else:
        r = r_init.clone()
        r[:, 0], r[:, -1] = ra, rb

    # 2. Damped Newton on the interior radii with the closed-form tridiagonal Hessian (dense
    #    solve: N is small), the full step first, a line search only where it fails.
    E, g, dg, off, dE_drb, E_c = _polyline_terms(r, c, prior)
    eye = torch.eye(n_nodes - 1, dtype=torch.float64, device=dev)
    active = ~radial & torch.isfinite(E)
    for _ in range(max_iter):
        act = active.nonzero().squeeze(1)
        if act.numel() == 0:
            break
        ga, dga, offa, Ea, ra_cur = g[act], dg[act], off[act], E[act], r[act]
        H = torch.diag_embed(dga) + torch.diag_embed(offa, 1) + torch.diag_embed(offa, -1)
        # Levenberg damping where the Newton step is not a descent direction (H not positive
        # definite far from the optimum). torch.linalg.solve: cholesky_ex is far slower here.
        mu = torch.zeros(len(act), dtype=torch.float64, device=dev)
        scale = dga.abs().amax(1).clamp(min=1e-30)
        for _k in range(12):
            Hd = H if _k == 0 else H + (mu * scale)[:, None, None] * eye
            step = -torch.linalg.solve_ex(Hd, ga[:, :, None])[0][:, :, 0]
            decrement = -(ga * step).sum(1)
            bad = ~(decrement > 0) & (ga.abs().amax(1) > 0)
            if not bool(bad.any()):
                break
            mu = torch.where(bad, torch.where(mu == 0, torch.full_like(mu, 1e-8), mu * 100), mu)
        new = ra_cur.clone()
        new[:, 1:-1] += step
        terms = _polyline_terms(new, c[act], prior)
        ok = (terms[0] < Ea) & (new[:, 1:-1] > 0).all(1)
        if not bool(ok.all()):
            f = (~ok).nonzero().squeeze(1)
            alphas = torch.tensor(_ALPHAS, dtype=torch.float64, device=dev)
            xs = ra_cur[f, None, :].repeat(1, len(_ALPHAS), 1)
            xs[..., 1:-1] += alphas[:, None] * step[f, None, :]
            es = torch.nan_to_num(planar_energy(xs, phi[act[f], None, :], w_fn), nan=math.inf)
            es = torch.where((xs > 0).all(-1), es, math.inf)
            k = es.argmin(1)
            better = es[torch.arange(len(f), device=dev), k] < Ea[f]
            fb = f[better]
            if fb.numel():
                new[fb] = xs[better, k[better]]
                sub = _polyline_terms(new[fb], c[act[fb]], prior)
                terms = tuple(t.clone() for t in terms)
                for t, v in zip(terms, sub):
                    t[fb] = v
                ok[fb] = True
        upd = act[ok]
        r[upd] = new[ok]
        for state, v in zip((E, g, dg, off, dE_drb, E_c), terms):
            state[upd] = v[ok]
        done = ~ok | (decrement < _NEWTON_STOP * Ea.abs()) | ~torch.isfinite(decrement)
        active[act[done]] = False
    dE_dtheta = (E_c * dc_dtheta).sum(1)
    return r, phi, E, dE_drb, dE_dtheta


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
        j = e1.abs().argmin(-1)
        u = -e1 * e1.gather(-1, j[:, None])
        u.scatter_add_(-1, j[:, None], torch.ones_like(j[:, None], dtype=u.dtype))
        u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        e2 = torch.where(degenerate[:, None], u, bperp / torch.where(degenerate, 1.0, by)[:, None])
        theta = torch.where(degenerate, torch.where(bx > 0, 0.0, math.pi), torch.atan2(by, bx))
    else:
        e2 = bperp.div_(by[:, None])
        theta = torch.atan2(by, bx)
    return ra, rb, theta, e1, e2


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


def _resample(r, phi, t):
    """Points at fractions t of the polyline's Euclidean arc length, interpolating (r, φ)
    linearly inside each chord. r, φ (B, N+1), t (T,) → r, φ (B, T)."""
    h = 4 * r[:, :-1] * r[:, 1:] * torch.sin((phi[:, 1:] - phi[:, :-1]) / 2) ** 2
    seg = torch.sqrt((r[:, :-1] - r[:, 1:]) ** 2 + h)
    cum = torch.cat([torch.zeros_like(seg[:, :1]), seg.cumsum(1)], 1)
    target = t[None, :] * cum[:, -1:]
    i = (torch.searchsorted(cum.contiguous(), target.contiguous(), right=True) - 1).clamp(0, seg.shape[1] - 1)
    seg_i = seg.gather(1, i)
    f = ((target - cum.gather(1, i)) / torch.where(seg_i > 0, seg_i, 1.0)).clamp(0, 1)
    rr = r.gather(1, i) * (1 - f) + r.gather(1, i + 1) * f
    pp = phi.gather(1, i) * (1 - f) + phi.gather(1, i + 1) * f
    return rr, pp


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
    # 2. Reduce each pair to its plane (float64 scalars, basis in the output dtype) and solve
    #    r(φ) there.
    ra, rb, theta, basis = _planes(a2, b2, eps(dtype, "antipodal"), dtype)
    r, phi, *_ = _solve_planar(ra, rb, theta, prior, n_nodes)
    # 3. Resample at fractions of arc length; lift only the T requested points, (T, 2) @ (2, d).
    rr, pp = _resample(r, phi, t.to(device=a2.device, dtype=torch.float64))
    coef = torch.stack([rr * torch.cos(pp), rr * torch.sin(pp)], -1).to(dtype)  # (B, T, 2)
    out = torch.bmm(coef, basis)
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
    ra, rb, theta, _ = _planes(a2, b2, eps(out_dtype(a, b), "antipodal"), None)
    _, _, e, _, _ = _solve_planar(ra, rb, theta, prior, n_nodes)
    return e.reshape(batch)


# ----------------------------------------------------------------------------------- centroid


def _centroid_objective(y, U, rs, prior, n_nodes, warm):
    """F(y) = Σ_k D(s_k, c) + w(|c|) for centroid coordinates y (B, K) in an orthonormal basis
    of span(seeds), where U (B, K, K) holds the unit seed directions and rs (B, K) the seed
    norms: only K scalars per seed enter, nothing d-sized.

    Gradient by the envelope theorem: the solver returns ∂D/∂|c| and ∂D/∂θ_k at its stationary
    interior radii; autograd only chains them through |c| = |y| and θ_k = ∠(s_k, y).
    Returns F (B,), ∇F (B, K), inner radii (B, K, N+1) (the next call's warm start).
    """
    B, K = y.shape
    w_fn = _w_fn(prior)
    y = y.detach().requires_grad_(True)
    with torch.enable_grad():
        rc = torch.linalg.vector_norm(y, dim=-1)
        along = (U * y[:, None, :]).sum(-1)
        perp2 = ((y[:, None, :] - along[..., None] * U) ** 2).sum(-1)
        theta = torch.atan2(torch.sqrt(torch.clamp(perp2, min=1e-300)), along)  # (B, K)
        w_c = w_fn(rc)
    r, _, D, dD_drc, dD_dth = _solve_planar(
        rs.reshape(-1), rc.detach()[:, None].expand(B, K).reshape(-1), theta.detach().reshape(-1), prior,
        n_nodes, r_init=None if warm is None else warm.reshape(B * K, -1))
    F = D.reshape(B, K).sum(-1) + w_c.detach()
    g_rc = dD_drc.reshape(B, K).sum(-1)
    (g,) = torch.autograd.grad([rc, theta, w_c], y, grad_outputs=[g_rc, dD_dth.reshape(B, K),
                                                                   torch.ones_like(w_c)])
    return F, g, r.reshape(B, K, -1)


def _bfgs(y, F, g, warm, Hinv, U, rs, prior, n_nodes, max_iter):
    """BFGS on the centroid objective in K dimensions, batched, with backtracking (Armijo).
    Inverse-Hessian estimate Hinv (B, K, K); returns the updated y, F, g, warm, Hinv."""
    B, K = y.shape
    dev, mode = y.device, float(prior.mode)
    eye = torch.eye(K, dtype=torch.float64, device=dev)
    gn = torch.linalg.vector_norm(g, dim=-1).clamp(min=1e-300)
    active = torch.ones(B, dtype=torch.bool, device=dev)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        p = -(Hinv @ g[..., None])[..., 0]
        slope = (p * g).sum(-1)
        p = torch.where((slope < 0)[:, None], p, -g * (0.01 * mode / gn)[:, None])
        slope = (p * g).sum(-1)
        alpha = torch.ones(B, dtype=torch.float64, device=dev)
        accepted = ~active
        y_new, F_new, g_new, warm_new = y.clone(), F.clone(), g.clone(), warm.clone()
        for _ls in range(12):
            todo = ~accepted
            if not bool(todo.any()):
                break
            i = todo.nonzero().squeeze(1)
            yt = y[i] + alpha[i, None] * p[i]
            Ft, gt, wt = _centroid_objective(yt, U[i], rs[i], prior, n_nodes, warm[i])
            ok = Ft <= F[i] + 1e-4 * alpha[i] * slope[i]
            j = i[ok]
            y_new[j], F_new[j], g_new[j], warm_new[j] = yt[ok], Ft[ok], gt[ok], wt[ok]
            accepted[j] = True
            alpha[i[~ok]] *= 0.5
        stalled = active & ~accepted  # no decrease found: at the optimum to float precision
        sk, yk = y_new - y, g_new - g
        sy = (sk * yk).sum(-1)
        upd = active & accepted & (sy > 1e-300)
        if bool(upd.any()):
            rho = 1 / torch.where(upd, sy, 1.0)
            V = eye - rho[:, None, None] * sk[:, :, None] * yk[:, None, :]
            Hn = V @ Hinv @ V.transpose(1, 2) + rho[:, None, None] * sk[:, :, None] * sk[:, None, :]
            Hinv = torch.where(upd[:, None, None], Hn, Hinv)
        # Relative decrease below 1e-9: F is flat there to well below the inner solver's
        # discretisation error (~1e-4). For K = 2 any point near the geodesic between the two
        # seeds is almost optimal (triangle equality), and BFGS would wander along that valley.
        small = (F - F_new) <= _CENTROID_FTOL * F.abs()
        y, F, g, warm = y_new, F_new, g_new, warm_new
        gn = torch.linalg.vector_norm(g, dim=-1).clamp(min=1e-300)
        active = active & ~stalled & ~(small & accepted)
    return y, F, g, warm, Hinv


def _initial_inverse_hessian(y, F, S, prior):
    """Starting inverse Hessian for BFGS, from a model of F: stiff radially (w'' ≈ 2 near the
    shell, once for the prior term and about once per path end), and tangentially like a
    Fermat–Weber sum Σ_k ω·|c − s_k| with ω = (F − w(|c|)) / Σ_k |c − s_k| the mean weight:
    H ≈ 2(K+1)·ĉĉᵀ + Σ_k ω/L_k·(I − u_k u_kᵀ), u_k = (c − s_k)/L_k. The tangential curvature is
    ~100x smaller than the radial one; an isotropic start costs BFGS many steps to learn that."""
    B, K = y.shape
    eye = torch.eye(K, dtype=torch.float64, device=y.device)
    rc = torch.linalg.vector_norm(y, dim=-1, keepdim=True)
    yhat = y / rc
    v = y[:, None, :] - S  # (B, K, K): c − s_k
    L = torch.linalg.vector_norm(v, dim=-1).clamp(min=1e-12 * float(prior.mode))
    u = v / L[..., None]
    omega = ((F - _w_fn(prior)(rc[:, 0])) / L.sum(-1)).clamp(min=1e-3)
    tang = ((omega[:, None] / L)[..., None, None] * (eye - u[..., :, None] * u[..., None, :])).sum(1)
    H = tang + 2 * (K + 1) * yhat[:, :, None] * yhat[:, None, :]
    H = 0.5 * (H + H.transpose(1, 2)) + 1e-9 * H.diagonal(dim1=1, dim2=2).amax(-1)[:, None, None] * eye
    Hinv, info = torch.linalg.inv_ex(H)
    fallback = eye / (2 * K + 2)
    return torch.where((info == 0)[:, None, None] & torch.isfinite(Hinv).all(-1).all(-1)[:, None, None],
                       Hinv, fallback)


def _centroid_coords(seeds64, prior, n_nodes, max_iter):
    """Optimise the centroid in span(seeds): returns Q (B, d, K), y (B, K), inner radii."""
    B, K, d = seeds64.shape
    dev = seeds64.device
    Q, R = torch.linalg.qr(seeds64.transpose(1, 2))  # seeds = Q R, Q (B, d, K)
    S = R.transpose(1, 2)  # (B, K, K): row k = coordinates of s_k
    rs = torch.linalg.vector_norm(S, dim=-1)
    U = S / rs[..., None]
    coarse = min(n_nodes, _CENTROID_COARSE_NODES)
    # 1. Start from the best baseline centroid: mean, mean direction at the mode, COG.
    m = S.mean(1)
    mn = torch.linalg.vector_norm(m, dim=-1, keepdim=True)
    starts = torch.stack([m, float(prior.mode) * m / mn, math.sqrt(K) * m], 1)  # (B, 3, K)
    Fs, gs, ws = _centroid_objective(starts.reshape(B * 3, K), U.repeat_interleave(3, 0),
                                     rs.repeat_interleave(3, 0), prior, coarse, None)
    Fs = torch.nan_to_num(Fs.reshape(B, 3), nan=math.inf)
    pick = torch.arange(B, device=dev) * 3 + Fs.argmin(1)
    y, F, g, warm = starts.reshape(B * 3, K)[pick], Fs.reshape(-1)[pick], gs[pick], ws[pick]
    # 2. BFGS at a coarse inner resolution (the objective differs from the fine one by ~1e-3
    #    relative, its minimiser by far less than the distance from the starts), then polish
    #    at ``n_nodes`` from there, keeping the curvature estimate.
    Hinv = _initial_inverse_hessian(y, F, S, prior)
    y, F, g, warm, Hinv = _bfgs(y, F, g, warm, Hinv, U, rs, prior, coarse, max_iter)
    if coarse < n_nodes:
        F, g, warm = _centroid_objective(y, U, rs, prior, n_nodes, None)
        y, F, g, warm, Hinv = _bfgs(y, F, g, warm, Hinv, U, rs, prior, n_nodes, max_iter)
    return Q, y, warm


def nao_centroid(seeds: torch.Tensor, *, prior=None, n_nodes: int = DEFAULT_NODES, max_iter: int = 60) -> torch.Tensor:
    """NAO centroid argmin_c Σ_k D(s_k, c) − log p(|c|): seeds (..., K, d) → (..., d).

    Sought in span(seeds) (coordinates from a QR factorisation, so the loop runs in K
    dimensions on K scalars per evaluation), started from the best of the mean, normalized and
    COG centroids and refined by BFGS with envelope-theorem gradients and warm-started inner
    solves; never worse than those starts under ``centroid_energy``. K = 1 gives the point on
    the seed's ray that minimises the objective.
    """
    c, _ = _nao_centroid_impl(seeds, prior, n_nodes, max_iter)
    return c


def _nao_centroid_impl(seeds, prior, n_nodes, max_iter):
    check_seeds("seeds", seeds, min_dim=2)
    if seeds.shape[-2] == 0:
        raise ValueError(f"seeds must have shape (..., K, d) with K ≥ 1, got {tuple(seeds.shape)}")
    *batch, K, d = seeds.shape
    prior = check_prior(prior, d)
    dtype = out_dtype(seeds)
    s64 = seeds.reshape(-1, K, d).double()
    Q, y, _ = _centroid_coords(s64, prior, n_nodes, max_iter)
    c = (Q @ y[..., None])[..., 0]
    return c.to(dtype).reshape(*batch, d), prior


def nao_centroid_paths(seeds: torch.Tensor, t: torch.Tensor, *, prior=None, n_nodes: int = DEFAULT_NODES):
    """NAO centroid and the NAO paths from it to each seed.

    seeds (..., K, d), t (T,) → (centroid (..., d), paths (..., K, T, d)); paths[..., k, :, :]
    runs from the centroid (t = 0) to seed k (t = 1).
    """
    t = check_t(t)
    c, prior = _nao_centroid_impl(seeds, prior, n_nodes, 60)
    paths = nao_interpolate(c[..., None, :].to(out_dtype(seeds)), seeds.to(out_dtype(seeds)), t,
                            prior=prior, n_nodes=n_nodes)
    return c, paths
