"""Geodesics in a plane through the origin: the 1-D problem every NAO solver reduces to
(README.md, §3 "The planar reduction" and §5 "The solver").

Notation:
    w(r) = −log p(r)            conformal factor, from a ``NormPrior``
    θ                           angle between the endpoints, φ ∈ [0, θ] the polar angle
    s_i = (1 − cos(πi/N))/2     Chebyshev fractions, i = 0..N; φ_i = θ·s_i
    r_i                         node radii; r_0 = r_a, r_N = r_b fixed, r_1..r_{N−1} free
    c_i = 4·sin²(θ·(s_{i+1} − s_i)/2)   chord constant: chord i has h_i = c_i·r_i·r_{i+1}

Energy of the planar polyline (every chord integrated honestly, Gauss–Legendre nodes s_q with
weights ω_q on [0, 1]):

    E = Σ_i L_i · W_i,   L_i² = (r_i − r_{i+1})² + c_i·r_i·r_{i+1},   W_i = Σ_q ω_q w(ρ_iq),
    ρ_iq² = ((1 − s_q)·r_i + s_q·r_{i+1})² − s_q(1 − s_q)·c_i·r_i·r_{i+1}   (|x| along the chord).

All derivatives below are closed form; the Hessian in the interior radii is tridiagonal and is
solved by a batched LDLᵀ (Thomas) recursion, so a Newton step costs O(N) per path.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .quadrature import gauss_legendre

DEFAULT_NODES = 64       # internal polyline nodes N per geodesic
INTERNAL_QUAD = 8        # Gauss–Legendre nodes per internal (short) chord
_ALPHAS = (0.5, 0.25, 0.1, 0.03, 0.01)  # line-search fallbacks when the full Newton step fails
_NEWTON_STOP = 1e-9      # stop after a full step whose Newton decrement is < this·E (the step
                         # then leaves an error ~ decrement², far below float64 resolution of E)
_TINY = 1e-300           # clamp under square roots of quantities that are ≥ 0 in exact arithmetic


def w_of(prior):
    """w(r) = −log p(r) in float64 for radii r > 0."""
    return prior.neg_log_prob64


@functools.lru_cache(maxsize=16)
def grid(n_nodes: int, device) -> torch.Tensor:
    """Chebyshev fractions s_i = (1 − cos(πi/N))/2, i = 0..N (cached; do not modify). The
    geodesic leaves an atypical endpoint almost radially and joins the shell in a boundary layer
    of width ~1/mode rad; the spacing puts nodes there."""
    i = torch.arange(n_nodes + 1, dtype=torch.float64, device=device)
    s = (1 - torch.cos(math.pi * i / n_nodes)) / 2
    s[0], s[-1] = 0.0, 1.0
    return s


def chord_constants(theta: torch.Tensor, n_nodes: int):
    """c_i (..., N) and its first two derivatives in θ: c = 4 sin²(u), u = θ·Δs_i/2,
    c' = 2·sin(θΔs_i)·Δs_i, c'' = 2·cos(θΔs_i)·Δs_i²."""
    s = grid(n_nodes, theta.device)
    ds = s[1:] - s[:-1]
    arg = theta[..., None] * ds
    return 4 * torch.sin(arg / 2) ** 2, 2 * torch.sin(arg) * ds, 2 * torch.cos(arg) * ds * ds


def planar_energy(r: torch.Tensor, phi: torch.Tensor, w_fn, quad: int = INTERNAL_QUAD) -> torch.Tensor:
    """Honest energy of planar polylines with polar nodes (r, φ) (..., N+1) → (...)."""
    s, om = gauss_legendre(quad, dtype=r.dtype, device=r.device)
    r0, r1 = r[..., :-1], r[..., 1:]
    h = 4 * r0 * r1 * torch.sin((phi[..., 1:] - phi[..., :-1]) / 2) ** 2
    length = torch.sqrt(torch.clamp((r0 - r1) ** 2 + h, min=_TINY))
    r0, r1, h = r0[..., None], r1[..., None], h[..., None]
    rad = torch.sqrt(torch.clamp(((1 - s) * r0 + s * r1) ** 2 - s * (1 - s) * h, min=_TINY))
    return (length * (w_fn(rad) * om).sum(-1)).sum(-1)


def chord_energy(r: torch.Tensor, c: torch.Tensor, w_fn, quad: int = INTERNAL_QUAD) -> torch.Tensor:
    """Σ_i L_i·W_i for node radii r (..., N+1) and chord constants c (..., N) → (...)."""
    s, om = gauss_legendre(quad, dtype=r.dtype, device=r.device)
    r0, r1 = r[..., :-1], r[..., 1:]
    r01 = r0 * r1
    length = torch.sqrt(torch.clamp((r0 - r1) ** 2 + c * r01, min=_TINY))
    m = (1 - s) * r0[..., None] + s * r1[..., None]
    rad = torch.sqrt(torch.clamp(m * m - (s * (1 - s)) * (c * r01)[..., None], min=_TINY))
    return (length * (w_fn(rad) * om).sum(-1)).sum(-1)


def chord_derivatives(r: torch.Tensor, c: torch.Tensor, prior, quad: int = INTERNAL_QUAD, mixed: bool = False):
    """Per-chord energy E_i = L_i·W_i and its derivatives in (r_i, r_{i+1}) (subscripts 0, 1)
    and, if ``mixed``, in the chord constant c_i. r (M, N+1), c (M, N) float64.

    Returns a dict of (M, N) tensors: E, E0, E1, E00, E01, E11 and, if mixed, Ec, E0c, E1c, Ecc.
    Product rule on E = L·W with, for L² = (r0 − r1)² + c·r0·r1 =: Λ and a_x = ∂Λ/∂x,
    L_x = a_x/(2L), L_xy = a_xy/(2L) − a_x·a_y/(4L³), and the same for ρ² = A.
    """
    s, om = gauss_legendre(quad, dtype=r.dtype, device=r.device)
    r0, r1 = r[:, :-1], r[:, 1:]
    r01 = r0 * r1
    dr = r0 - r1
    L2 = torch.clamp(dr * dr + c * r01, min=_TINY)
    L = torch.sqrt(L2)
    iL = 1 / L
    iL3 = iL / L2
    a0, a1 = 2 * dr + c * r1, c * r0 - 2 * dr  # ∂L²/∂r0, ∂L²/∂r1 (∂L²/∂c = r0·r1)
    L_0, L_1 = 0.5 * a0 * iL, 0.5 * a1 * iL
    L_00 = iL - 0.25 * a0 * a0 * iL3
    L_11 = iL - 0.25 * a1 * a1 * iL3
    L_01 = 0.5 * (c - 2) * iL - 0.25 * a0 * a1 * iL3
    R0, R1, C, R01 = r0[..., None], r1[..., None], c[..., None], r01[..., None]
    st = s * (1 - s)
    m = (1 - s) * R0 + s * R1
    A = torch.clamp(m * m - st * C * R01, min=_TINY)
    rho = torch.sqrt(A)
    irho = 1 / rho
    irho3 = irho / A
    stC = st * C
    A0, A1 = 2 * (1 - s) * m - stC * R1, 2 * s * m - stC * R0
    p0, p1 = 0.5 * A0 * irho, 0.5 * A1 * irho
    p00 = (1 - s) ** 2 * irho - 0.25 * A0 * A0 * irho3
    p11 = s**2 * irho - 0.25 * A1 * A1 * irho3
    p01 = 0.5 * (2 * st - stC) * irho - 0.25 * A0 * A1 * irho3
    w, w1, w2 = prior.neg_log_prob_derivatives(rho)
    ow1, ow2 = om * w1, om * w2
    W = (om * w).sum(-1)
    W_0, W_1 = (ow1 * p0).sum(-1), (ow1 * p1).sum(-1)
    W_00 = (ow2 * p0 * p0 + ow1 * p00).sum(-1)
    W_11 = (ow2 * p1 * p1 + ow1 * p11).sum(-1)
    W_01 = (ow2 * p0 * p1 + ow1 * p01).sum(-1)
    out = {
        "E": L * W,
        "E0": L_0 * W + L * W_0,
        "E1": L_1 * W + L * W_1,
        "E00": L_00 * W + 2 * L_0 * W_0 + L * W_00,
        "E01": L_01 * W + L_0 * W_1 + L_1 * W_0 + L * W_01,
        "E11": L_11 * W + 2 * L_1 * W_1 + L * W_11,
    }
    Ac = -st * R01  # ∂ρ²/∂c
    pc = 0.5 * Ac * irho
    W_c = (ow1 * pc).sum(-1)
    L_c = 0.5 * r01 * iL
    out["Ec"] = L_c * W + L * W_c
    if mixed:
        pcc = -0.25 * Ac * Ac * irho3
        p0c = -0.5 * st * R1 * irho - 0.25 * A0 * Ac * irho3
        p1c = -0.5 * st * R0 * irho - 0.25 * A1 * Ac * irho3
        W_cc = (ow2 * pc * pc + ow1 * pcc).sum(-1)
        W_0c = (ow2 * p0 * pc + ow1 * p0c).sum(-1)
        W_1c = (ow2 * p1 * pc + ow1 * p1c).sum(-1)
        L_cc = -0.25 * r01 * r01 * iL3
        L_0c = 0.5 * r1 * iL - 0.25 * a0 * r01 * iL3
        L_1c = 0.5 * r0 * iL - 0.25 * a1 * r01 * iL3
        out["Ecc"] = L_cc * W + 2 * L_c * W_c + L * W_cc
        out["E0c"] = L_0c * W + L_0 * W_c + L_c * W_0 + L * W_0c
        out["E1c"] = L_1c * W + L_1 * W_c + L_c * W_1 + L * W_1c
    return out


def interior_terms(t):
    """From chord derivatives: gradient (M, N−1) and tridiagonal Hessian (diagonal (M, N−1),
    off-diagonal (M, N−2)) of the path energy in the interior radii r_1..r_{N−1}."""
    g = t["E1"][:, :-1] + t["E0"][:, 1:]
    diag = t["E11"][:, :-1] + t["E00"][:, 1:]
    return g, diag, t["E01"][:, 1:-1]


def solve_tridiagonal(diag: torch.Tensor, off: torch.Tensor, rhs: torch.Tensor):
    """Solve symmetric tridiagonal systems H x = rhs, H = tridiag(off, diag, off).

    diag (M, n), off (M, n−1), rhs (M, n, k) float64 → x (M, n, k), positive_definite (M,) bool.
    x is meaningful only where H is positive definite (the solvers then damp and retry). On the
    CPU: an LDLᵀ recursion over n (a banded solver: O(n) time and memory per system, never the
    n×n matrix), vectorised across the M systems in numpy (per-call overhead ~1 µs against ~5 µs
    for a torch op), and element-wise, so each system's solution has the same bits whatever else
    is in the batch (a plan that solves only the paths it samples equals one that solves them
    all). On other devices (no banded solver in torch): a dense batched Cholesky. H is positive
    definite iff every pivot of LDLᵀ is positive.
    """
    M, n = diag.shape
    if diag.device.type != "cpu" or n < 2:
        H = torch.diag_embed(diag)
        if n > 1:
            H = H + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
        chol, info = torch.linalg.cholesky_ex(H)
        return torch.cholesky_solve(rhs, chol), info == 0
    D = diag.T.contiguous().numpy()
    E = off.T.contiguous().numpy()
    z = rhs.permute(1, 0, 2).contiguous().numpy().copy()
    piv = D.copy()
    lo = D.copy()  # lo[i] = l_i = E_{i−1}/d_{i−1} (lo[0] unused)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # a zero pivot: not PD, reported
        for i in range(1, n):
            li = E[i - 1] / piv[i - 1]
            lo[i] = li
            piv[i] = D[i] - li * E[i - 1]
            z[i] -= li[:, None] * z[i - 1]
        x = z
        x[n - 1] /= piv[n - 1][:, None]
        for i in range(n - 2, -1, -1):
            x[i] = x[i] / piv[i][:, None] - lo[i + 1][:, None] * x[i + 1]
    pd = torch.from_numpy((piv > 0).all(0))
    return torch.from_numpy(x).permute(1, 0, 2), pd


def damped_newton_step(g, diag, off, *, extra_rhs=None, max_tries: int = 12):
    """Newton step −H⁻¹g for tridiagonal H, with Levenberg damping H + μ·max|diag|·I where H is
    not positive definite (μ = 1e-8, ×100 per try, per system). Returns the step (M, n), the
    solves of ``extra_rhs`` (M, n, k) with the same damped matrix (or None), and the damped
    diagonal."""
    M = g.shape[0]
    rhs = -g[:, :, None] if extra_rhs is None else torch.cat([-g[:, :, None], extra_rhs], -1)
    mu = torch.zeros(M, dtype=g.dtype, device=g.device)
    scale = diag.abs().amax(1).clamp(min=1e-30)
    dd = diag
    for _ in range(max_tries):
        x, pd = solve_tridiagonal(dd, off, rhs)
        if bool(pd.all()):
            break
        mu = torch.where(pd, mu, torch.where(mu == 0, torch.full_like(mu, 1e-8), mu * 100))
        dd = diag + (mu * scale)[:, None]
    return x[:, :, 0], (None if extra_rhs is None else x[:, :, 1:]), dd


def _path_terms(r, c, prior):
    t = chord_derivatives(r, c, prior)
    g, diag, off = interior_terms(t)
    return t["E"].sum(1), g, diag, off, t["E1"][:, -1], t["Ec"]


def start_curves(ra, rb, theta, s, mode: float):
    """Starting radii (B, 3, N+1): the polar lerp r = lerp(r_a, r_b), the LERP chord
    r(φ) = r_a r_b sinθ / (r_b sin(θ−φ) + r_a sinφ) and the shell r = mode."""
    phi = theta[:, None] * s
    lin = ra[:, None] + (rb - ra)[:, None] * s
    sin_t = torch.sin(theta)[:, None]
    den = rb[:, None] * torch.sin(theta[:, None] - phi) + ra[:, None] * torch.sin(phi)
    chord = torch.where(den > 0, ra[:, None] * rb[:, None] * sin_t / torch.where(den > 0, den, 1.0), lin)
    cands = torch.stack([lin, chord, torch.full_like(lin, mode)], 1)
    cands[..., 0], cands[..., -1] = ra[:, None], rb[:, None]
    return cands


def solve_planar(ra, rb, theta, prior, n_nodes: int = DEFAULT_NODES, r_init=None, max_iter: int = 60):
    """Minimise the planar polyline energy over the interior radii. Inputs (B,) float64.

    Returns radii (B, N+1), angles (B, N+1), energies (B,), and ∂E/∂r_b, ∂E/∂θ (B,) at the
    solution (envelope theorem: the interior radii are stationary). ``r_init`` (B, N+1), if
    given, is the only starting curve (a warm start; its end radii are replaced).
    """
    w_fn, mode = w_of(prior), float(prior.mode)
    B, dev = ra.shape[0], ra.device
    s = grid(n_nodes, dev)
    phi = theta[:, None] * s
    c, dc_dtheta, _ = chord_constants(theta, n_nodes)
    radial = theta < 1e-13  # on one ray: the radial segment is the geodesic (nothing to solve)

    # 1. Starting curve. Cold: the best of the polar lerp, the LERP chord and the shell, so the
    #    result is never worse than the LERP chord on the same nodes.
    if r_init is None:
        cands = start_curves(ra, rb, theta, s, mode)
        cands[radial] = cands[radial, :1].expand(-1, 3, -1)  # the polar lerp: the radial segment
        e = torch.nan_to_num(chord_energy(cands, c[:, None, :], w_fn), nan=math.inf)
        r = cands[torch.arange(B, device=dev), e.argmin(1)]
    else:
        # Move the warm curve's ends to r_a, r_b by a correction linear in s: replacing only the
        # end radii folds a nearly radial path (it overshoots r_b and turns back), a local
        # minimum the Newton steps do not leave.
        r = r_init + (1 - s) * (ra - r_init[:, 0])[:, None] + s * (rb - r_init[:, -1])[:, None]
        r[:, 0], r[:, -1] = ra, rb

    # 2. Damped Newton on the interior radii (tridiagonal Hessian, O(N) solve), the full step
    #    first, a line search only where it fails.
    E, g, dg, off, dE_drb, E_c = _path_terms(r, c, prior)
    active = ~radial & torch.isfinite(E)
    for _ in range(max_iter):
        act = active.nonzero().squeeze(1)
        if act.numel() == 0:
            break
        ga, Ea, ra_cur = g[act], E[act], r[act]
        step, _, _ = damped_newton_step(ga, dg[act], off[act])
        decrement = -(ga * step).sum(1)
        new = ra_cur.clone()
        new[:, 1:-1] += step
        terms = _path_terms(new, c[act], prior)
        ok = (terms[0] < Ea) & (new[:, 1:-1] > 0).all(1)
        if not bool(ok.all()):
            f = (~ok).nonzero().squeeze(1)
            alphas = torch.tensor(_ALPHAS, dtype=torch.float64, device=dev)
            xs = ra_cur[f, None, :].repeat(1, len(_ALPHAS), 1)
            xs[..., 1:-1] += alphas[:, None] * step[f, None, :]
            es = torch.nan_to_num(chord_energy(xs, c[act[f], None, :], w_fn), nan=math.inf)
            es = torch.where((xs > 0).all(-1), es, math.inf)
            k = es.argmin(1)
            better = es[torch.arange(len(f), device=dev), k] < Ea[f]
            fb = f[better]
            if fb.numel():
                new[fb] = xs[better, k[better]]
                sub = _path_terms(new[fb], c[act[fb]], prior)
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


def chord_points(r, phi, per_chord: int):
    """Points along each chord of planar polylines (B, N+1): per_chord points per chord
    (fractions j/per_chord, j = 0..per_chord−1) plus the last node. Returns (x, y) coordinates
    in the plane, norms and arc-length fractions, each (B, N·per_chord + 1)."""
    f = torch.arange(per_chord, dtype=r.dtype, device=r.device) / per_chord
    x, y = r * torch.cos(phi), r * torch.sin(phi)
    px = (x[:, :-1, None] * (1 - f) + x[:, 1:, None] * f).flatten(1)
    py = (y[:, :-1, None] * (1 - f) + y[:, 1:, None] * f).flatten(1)
    px, py = torch.cat([px, x[:, -1:]], 1), torch.cat([py, y[:, -1:]], 1)
    seg = torch.sqrt((px[:, 1:] - px[:, :-1]) ** 2 + (py[:, 1:] - py[:, :-1]) ** 2)
    arc = torch.cat([torch.zeros_like(seg[:, :1]), seg.cumsum(1)], 1)
    arc = arc / arc[:, -1:].clamp(min=_TINY)
    return px, py, torch.sqrt(px * px + py * py), arc


def resample(r, phi, t):
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
