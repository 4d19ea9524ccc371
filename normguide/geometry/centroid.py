"""NAO centroids (README.md, §5 "The solver", Centroids; §3 for why the span suffices).

Notation:
    s_k, r_k = |s_k|, k = 1..K      seeds and their norms
    c, ρ = |c|, θ_k = ∠(s_k, c)      centroid, its norm, its angle to each seed
    D(s, c)                          geodesic energy between two points (``planar``)
    F(c) = Σ_k D(s_k, c) + w(ρ)      the objective, w = −log p
    y ∈ R^K', K' = min(K, d)         coordinates of c in an orthonormal basis of span(seeds)

Everything runs on K·K' numbers per concept: the Gram matrix S·Sᵀ gives the seeds' coordinates
(eigendecomposition, so rank-deficient sets and K > d need no special case), the solvers work on
(r_k, ρ, θ_k), and the result is lifted once as c = Σ_k α_k s_k (float64, cast once).

Each concept takes one of three routes (all batched over concepts):
  1. Seeds on one ray (K = 1, identical seeds): c = ρ·ŝ, and F(ρ) = Σ_k |∫_{r_k}^ρ w| + w(ρ)
     is a 1-D problem (the geodesic between points of one ray is the radial segment). Its
     minimiser lies between the seeds' norms and the mode; a seed itself is often the
     minimiser (F has a kink there) and is then returned exactly.
  2. K = 2: by the triangle inequality F(c) ≥ D(s_1, s_2) + w(mode), with equality iff c lies on
     the geodesic at the mode's norm. The geodesic is solved once; where it reaches the shell
     (w within τ of w(mode)), c is its point nearest the arc-length midpoint among the points
     where w is within τ of its minimum on the path, moved along its ray to the exact 1-D
     optimum. F is flat along the shell section of the geodesic (in the continuum the bound is
     attained along it up to ~1e-6 relative), so BFGS on F wandered; the rule picks the central member, which keeps
     the centroid symmetric in the two seeds. Elsewhere (close seeds far from the shell) the
     minimiser leaves the geodesic and the general route takes over from that point.
  3. General: one Newton iteration on (y, interior radii of all K paths) jointly. The Hessian
     is K tridiagonal blocks bordered by the K' coordinates; eliminating the blocks (Schur
     complement: 3 tridiagonal solves per path) leaves a K'×K' system. Quadratic convergence
     from the best of the mean, normalized and COG centroids (ranked by an upper bound), at
     min(n_nodes, _COARSE_NODES) and then, for finer n_nodes, at n_nodes. Safeguards: an
     iterate next to a seed tests the seed itself (F has a kink there), and where Newton's
     steps keep being cut (a path nearly on its seed's ray) BFGS with envelope gradients
     finishes.
"""

from __future__ import annotations

import functools
import math

import torch

from ._numerics import check_prior, check_seeds, check_t, out_dtype
from .nao import geodesic_plane, nao_interpolate, spread_orthogonal
from .planar import (
    DEFAULT_NODES,
    chord_constants,
    chord_derivatives,
    chord_energy,
    chord_points,
    damped_newton_step,
    grid,
    interior_terms,
    solve_planar,
    start_curves,
    w_of,
)

_RANK_RTOL = 1e-12       # Gram eigenvalues below this·K·λ_max count as zero (span rank)
_FLAT_STD = 0.05         # K = 2: τ = ½·w''(mode)·(this·std)², the norm resolution of "on the shell"
_COARSE_NODES = 64       # general route: resolution of the first Newton phase (a second runs at
                         # n_nodes when that is finer)
_JOINT_STOP = 1e-11      # joint Newton stops after a step whose decrement is < this·|F|
_RAY_GRID = 257          # 1-D route: grid points between the seeds' norms and the mode
_RAY_QUAD = 64           # Gauss–Legendre nodes for ∫ w along a ray
_ARMIJO = 1e-4
_JOINT_QUAD = 4          # Gauss–Legendre nodes per chord in the joint Newton: the chords are short, and
                         # 4 nodes differ from 8 by < 1e-9 relative at N = 64 (d = 16384; measured)
_FALLBACK_FTOL = 1e-12   # BFGS fallback stops after a step that lowers F by less than this·|F|
_BOUND_SLACK = 1e-3      # K = 2: relative margin on the lower bound D(s_1, s_2) + w(|c|)
_KINK_RTOL = 1e-4       # general route: |y − s_k| below this·|y| stops Newton to test the seed s_k


# ------------------------------------------------------------------------------ span coordinates


def span_coordinates(S: torch.Tensor):
    """Coordinates of seeds S (B, K, d) float64 in an orthonormal basis of their span.

    G = S·Sᵀ = V Λ Vᵀ (eigendecomposition, top K' = min(K, d) pairs); seed coordinates
    Y = V Λ^½ (B, K, K'), so that Y·Yᵀ = G; a point with coordinates y is Sᵀ·α with
    α = V Λ^−½ y. Eigenvalues below _RANK_RTOL·K·λ_max are null directions: their coordinates
    and coefficients are set to 0. Returns Y, the lift matrix A = V Λ^−½ (B, K, K') and the
    mask of non-null coordinates (B, K').
    """
    _, K, d = S.shape
    kp = min(K, d)
    lam, V = torch.linalg.eigh(S @ S.transpose(1, 2))
    lam, V = lam[:, K - kp:], V[:, :, K - kp:]
    keep = lam > _RANK_RTOL * K * lam[:, -1:].clamp(min=0)
    root = torch.sqrt(torch.where(keep, lam, 1.0))
    Y = V * torch.where(keep, root, 0.0)[:, None, :]
    A = V * torch.where(keep, 1 / root, 0.0)[:, None, :]
    return Y, A, keep


# ------------------------------------------------------------------------------ route 1: one ray


def _ray_integral(prior, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """∫_a^b w(r) dr (signed) by Gauss–Legendre, a, b (...) > 0."""
    from .quadrature import gauss_legendre

    s, om = gauss_legendre(_RAY_QUAD, dtype=a.dtype, device=a.device)
    r = a[..., None] + (b - a)[..., None] * s
    return (b - a) * (w_of(prior)(r) * om).sum(-1)


def _ray_objective(prior, radii: torch.Tensor, rho: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """F(ρ) = Σ_k |∫_{r_k}^ρ w| + w(ρ) for radii (B, K) and candidates ρ (B, C) → (B, C), with
    the integrals taken from a common reference point ref (B,) (W(x) = ∫_ref^x w)."""
    Wr = _ray_integral(prior, ref[:, None].expand_as(rho), rho)
    Wk = _ray_integral(prior, ref[:, None].expand_as(radii), radii)
    return (Wr[:, :, None] - Wk[:, None, :]).abs().sum(-1) + w_of(prior)(rho)


def ray_centroid(radii: torch.Tensor, prior) -> tuple[torch.Tensor, torch.Tensor]:
    """Minimise F(ρ) = Σ_k |∫_{r_k}^ρ w| + w(ρ) for seeds on one ray with norms radii (B, K).

    The minimiser lies in [min(r_k, mode), max(r_k, mode)] (outside it both terms grow, w being
    unimodal). F is smooth between the seeds' norms, with a kink at each: a grid over the
    interval plus the r_k locates the best piece, Newton on F' = (n_below − n_above)·w + w'
    polishes an interior minimum, and a seed's norm is kept exactly where it wins.
    Returns ρ (B,) and the index of the seed whose norm ρ equals (B,), −1 where none.
    """
    K = radii.shape[1]
    mode = torch.full_like(radii[:, 0], float(prior.mode))
    lo = torch.minimum(radii.amin(1), mode)
    hi = torch.maximum(radii.amax(1), mode)
    f = torch.linspace(0, 1, _RAY_GRID, dtype=radii.dtype, device=radii.device)
    cand = torch.cat([lo[:, None] + (hi - lo)[:, None] * f, radii], 1)  # (B, G + K)
    F = _ray_objective(prior, radii, cand, lo)
    best = F.argmin(1)
    rho = cand.gather(1, best[:, None])[:, 0]
    # Newton polish of a grid point, inside its smooth piece (between neighbouring kinks)
    below = (radii[:, None, :] < cand[:, :, None]).sum(-1)  # (B, C): seeds below each candidate
    n_sign = (2 * below - K).gather(1, best[:, None])[:, 0].to(radii.dtype)
    on_kink = (cand.gather(1, best[:, None]) == radii).any(1)
    left = torch.where(radii < rho[:, None], radii, lo[:, None].expand_as(radii)).amax(1)
    left = torch.maximum(left, lo)
    right = torch.where(radii > rho[:, None], radii, hi[:, None].expand_as(radii)).amin(1)
    right = torch.minimum(right, hi)
    x = rho.clone()
    for _ in range(30):
        w, w1, w2 = prior.neg_log_prob_derivatives(x)
        g, h = n_sign * w + w1, n_sign * w1 + w2
        x_new = torch.where(h > 0, x - g / torch.where(h > 0, h, 1.0), x).clamp(left, right)
        if bool(((x_new - x).abs() <= 1e-15 * x).all()):
            x = x_new
            break
        x = x_new
    x = torch.where(on_kink, rho, x)
    F_new = _ray_objective(prior, radii, x[:, None], lo)[:, 0]
    rho = torch.where(F_new < F.gather(1, best[:, None])[:, 0], x, rho)
    hit = rho[:, None] == radii
    seed = torch.where(hit.any(1), hit.to(torch.int64).argmax(1), torch.full_like(best, -1))
    return rho, seed


# ------------------------------------------------------------------------------ joint Newton


def _angles(y, U):
    """ρ = |y| (B,), θ_k (B, K), unit ŷ (B, K'), unit tangents t_k (B, K, K') (direction of
    increasing θ_k), cot θ_k (B, K)."""
    rho = torch.linalg.vector_norm(y, dim=-1)
    yhat = y / rho[:, None]
    along = (U * y[:, None, :]).sum(-1)
    perp = y[:, None, :] - along[..., None] * U
    q = torch.linalg.vector_norm(perp, dim=-1)
    theta = torch.atan2(q, along)
    e = perp / q.clamp(min=1e-300)[..., None]
    cos_t, sin_t = torch.cos(theta), torch.sin(theta)
    t = cos_t[..., None] * e - sin_t[..., None] * U
    cot = cos_t / sin_t.clamp(min=1e-12)
    return rho, theta, yhat, t, cot


def _joint_energy(y, R, U, prior, n_nodes):
    """F(y, R) = Σ_k E_k(R_k; ρ, θ_k) + w(ρ) for coordinates y (B, K') and node radii
    R (B, K, N+1) (R[..., 0] = r_k; R[..., N] is replaced by ρ)."""
    B, K, n1 = R.shape
    rho, theta, *_ = _angles(y, U)
    c, _, _ = chord_constants(theta, n_nodes)
    R = torch.cat([R[..., :-1], rho[:, None, None].expand(B, K, 1)], -1)
    E = chord_energy(R.reshape(B * K, n1), c.reshape(B * K, -1), w_of(prior), _JOINT_QUAD).reshape(B, K)
    return E.sum(1) + w_of(prior)(rho)


def _joint_step(y, R, U, null, prior, n_nodes):
    """One damped Newton step on (y, interior radii) (module doc, route 3).

    Per path, with p = (ρ, θ) and I the interior radii: the gradient g_I, g_ρ, g_θ and the
    Hessian blocks H_II (tridiagonal), H_Iρ (last node only), H_Iθ, H_pp. Z = H_II⁻¹·[g_I, H_Iρ,
    H_Iθ] gives the reduced D̃_pp = H_pp − H_pI·Z_p and g̃_p = g_p − H_pI·Z_g. With ŷ = y/ρ,
    ∇ρ = ŷ, ∇θ_k = t_k/ρ, ∇²ρ = (I − ŷŷᵀ)/ρ and
    ∇²θ_k = −(ŷt_kᵀ + t_kŷᵀ)/ρ² + cot θ_k·(I − ŷŷᵀ − t_kt_kᵀ)/ρ², the reduced K'×K' system is
        S = α·ŷŷᵀ + ŷVᵀ + Vŷᵀ + Σ_k γ_k·t_kt_kᵀ + σ·(I − ŷŷᵀ),
        α = Σ D̃_ρρ + w'',  V = Σ (D̃_ρθ/ρ − g_θ/ρ²)·t_k,  γ_k = (D̃_θθ − g_θ·cot θ_k)/ρ²,
        σ = (Σ g_ρ + w')/ρ + Σ g_θ·cot θ_k/ρ²,
    right-hand side −(ŷ·(Σ g̃_ρ + w') + Σ g̃_θ·t_k/ρ). Returns F, the gradient's inner product
    with the step (slope), δy (B, K') and δR (B, K, N−1).
    """
    B, K, n1 = R.shape
    N = n1 - 1
    rho, theta, yhat, t, cot = _angles(y, U)
    c, c1, c2 = chord_constants(theta, n_nodes)
    R = torch.cat([R[..., :-1], rho[:, None, None].expand(B, K, 1)], -1)
    d = chord_derivatives(R.reshape(B * K, n1), c.reshape(B * K, N), prior, _JOINT_QUAD, mixed=True)
    c1f, c2f = c1.reshape(B * K, N), c2.reshape(B * K, N)
    gI, diag, off = interior_terms(d)
    g_r, H_rr, H_rI = d["E1"][:, -1], d["E11"][:, -1], d["E01"][:, -1]
    g_t = (d["Ec"] * c1f).sum(1)
    H_tt = (d["Ecc"] * c1f * c1f + d["Ec"] * c2f).sum(1)
    H_It = d["E1c"][:, :-1] * c1f[:, :-1] + d["E0c"][:, 1:] * c1f[:, 1:]
    H_rt = d["E1c"][:, -1] * c1f[:, -1]
    H_Ir = torch.zeros_like(gI)
    H_Ir[:, -1] = H_rI
    dI0, X, _ = damped_newton_step(gI, diag, off, extra_rhs=torch.stack([H_Ir, H_It], -1))
    Xr, Xt = X[..., 0], X[..., 1]
    Dt_rr = H_rr - H_rI * Xr[:, -1]
    Dt_rt = H_rt - H_rI * Xt[:, -1]
    Dt_tt = H_tt - (H_It * Xt).sum(1)
    gt_r = g_r + H_rI * dI0[:, -1]
    gt_t = g_t + (H_It * dI0).sum(1)
    resh = lambda x: x.reshape(B, K)
    g_r, g_t, Dt_rr, Dt_rt, Dt_tt, gt_r, gt_t = map(resh, (g_r, g_t, Dt_rr, Dt_rt, Dt_tt, gt_r, gt_t))
    w, w1, w2 = prior.neg_log_prob_derivatives(rho)
    F = d["E"].sum(1).reshape(B, K).sum(1) + w
    kp = y.shape[1]
    eye = torch.eye(kp, dtype=y.dtype, device=y.device)
    P = eye - yhat[:, :, None] * yhat[:, None, :]
    alpha = Dt_rr.sum(1) + w2
    V = ((Dt_rt / rho[:, None] - g_t / rho[:, None] ** 2)[..., None] * t).sum(1)
    gamma = (Dt_tt - g_t * cot) / rho[:, None] ** 2
    sigma = (g_r.sum(1) + w1) / rho + (g_t * cot).sum(1) / rho**2
    S = (alpha[:, None, None] * yhat[:, :, None] * yhat[:, None, :]
         + yhat[:, :, None] * V[:, None, :] + V[:, :, None] * yhat[:, None, :]
         + t.transpose(1, 2) @ (gamma[..., None] * t) + sigma[:, None, None] * P)
    S = 0.5 * (S + S.transpose(1, 2))
    scale = S.diagonal(dim1=1, dim2=2).abs().amax(-1).clamp(min=1e-30)
    S = S + torch.diag_embed(null.to(S.dtype)) * scale[:, None, None]  # null directions: inert
    grad_y = yhat * (g_r.sum(1) + w1)[:, None] + ((g_t / rho[:, None])[..., None] * t).sum(1)
    rhs = -(yhat * (gt_r.sum(1) + w1)[:, None] + ((gt_t / rho[:, None])[..., None] * t).sum(1))
    mu = torch.zeros(B, dtype=y.dtype, device=y.device)
    for _ in range(14):
        chol, info = torch.linalg.cholesky_ex(S + (mu * scale)[:, None, None] * eye)
        if bool((info == 0).all()):
            break
        mu = torch.where(info == 0, mu, torch.where(mu == 0, torch.full_like(mu, 1e-10), mu * 100))
    dy = torch.cholesky_solve(rhs[..., None], chol)[..., 0]
    dy = torch.where(null, 0.0, dy)
    dp_r = (yhat * dy).sum(-1)[:, None]  # (B, 1)
    dp_t = (t * dy[:, None, :]).sum(-1) / rho[:, None]  # (B, K)
    dR = dI0.reshape(B, K, N - 1) - Xr.reshape(B, K, N - 1) * dp_r[..., None] \
        - Xt.reshape(B, K, N - 1) * dp_t[..., None]
    slope = (grad_y * dy).sum(-1) + (gI.reshape(B, K, N - 1) * dR).sum((1, 2))
    return F, slope, dy, dR


def _joint_newton(y, R, Y, prior, n_nodes, max_iter, stop_near_seed=True):
    """Damped Newton with Armijo backtracking on F(y, R), batched; each concept stops on its
    own once its decrement is below _JOINT_STOP·|F|, once no step decreases F, or (with
    ``stop_near_seed``) once y is within _KINK_RTOL·|y| of a seed: F has a kink at each seed
    (D(s_k, c) ≈ w(r_k)·|c − s_k| near s_k), where Newton only creeps, and the caller tests
    the seed itself. Returns y, R, the index of the seed each concept stopped at (−1: none) and
    whether it converged."""
    B = Y.shape[0]
    rs = torch.linalg.vector_norm(Y, dim=-1)
    U = Y / rs[..., None]
    active = torch.ones(B, dtype=torch.bool, device=y.device)
    converged = torch.zeros_like(active)
    short_steps = torch.zeros(B, dtype=torch.int64, device=y.device)
    near_seed = torch.full((B,), -1, dtype=torch.int64, device=y.device)
    for _ in range(max_iter):
        idx = active.nonzero().squeeze(1)
        if idx.numel() == 0:
            break
        if stop_near_seed:
            dist = torch.linalg.vector_norm(y[idx, None, :] - Y[idx], dim=-1)
            k = dist.argmin(1)
            near = dist.gather(1, k[:, None])[:, 0] < _KINK_RTOL * torch.linalg.vector_norm(y[idx], dim=-1)
            if bool(near.any()):
                near_seed[idx[near]] = k[near]
                active[idx[near]] = False
                idx = idx[~near]
                if idx.numel() == 0:
                    break
        F, slope, dy, dR = _joint_step(y[idx], R[idx], U[idx], _null_mask(Y[idx]), prior, n_nodes)
        descent = torch.isfinite(slope) & (slope < 0)
        small = ~(-slope >= _JOINT_STOP * F.abs())  # also true for NaN
        alpha = torch.ones_like(F)
        accepted = torch.zeros_like(descent)
        y_new, R_new = y[idx].clone(), R[idx].clone()
        todo = descent & ~small
        for _ls in range(20):
            if not bool(todo.any()):
                break
            j = todo.nonzero().squeeze(1)
            yt = y[idx[j]] + alpha[j, None] * dy[j]
            Rt = R[idx[j]].clone()
            Rt[..., 1:-1] += alpha[j, None, None] * dR[j]
            ok_pos = (Rt[..., 1:-1] > 0).all(-1).all(-1) & (torch.linalg.vector_norm(yt, dim=-1) > 0)
            Ft = _joint_energy(yt, Rt, U[idx[j]], prior, n_nodes)
            ok = ok_pos & torch.isfinite(Ft) & (Ft <= F[j] + _ARMIJO * alpha[j] * slope[j])
            jj = j[ok]
            y_new[jj], R_new[jj] = yt[ok], Rt[ok]
            accepted[jj] = True
            todo[jj] = False
            alpha[j[~ok]] *= 0.5
        # a converged step (decrement below tolerance) is still taken: it costs nothing more
        fin = small & descent
        if bool(fin.any()):
            j = fin.nonzero().squeeze(1)
            yt = y[idx[j]] + dy[j]
            Rt = R[idx[j]].clone()
            Rt[..., 1:-1] += dR[j]
            ok = (Rt[..., 1:-1] > 0).all(-1).all(-1)
            y_new[j[ok]], R_new[j[ok]] = yt[ok], Rt[ok]
        y[idx], R[idx] = y_new, R_new
        converged[idx[small]] = True
        # Steps cut below 1/64 three times in a row: Newton's model is poor here (a path
        # nearly on its seed's ray, where the node angles collapse); the caller falls back.
        short_steps[idx] = torch.where(accepted & (alpha < 1 / 64), short_steps[idx] + 1, 0)
        active[idx[small | ~accepted | (short_steps[idx] >= 3)]] = False
    return y, R, near_seed, converged


def _null_mask(Y):
    """Coordinates along which every seed is 0: the null directions of a rank-deficient span
    (``span_coordinates`` sets them to exactly 0)."""
    return (Y == 0).all(1)


def objective(Y, y, prior, n_nodes, r_init=None):
    """F(y) = Σ_k D(s_k, y) + w(|y|) by planar solves (cold, or warm from r_init (B, K, N+1)):
    seed coordinates Y (B, K, K'), points y (B, K') → (B,)."""
    B, K, _ = Y.shape
    rs = torch.linalg.vector_norm(Y, dim=-1)
    rho, theta, *_ = _angles(y, Y / rs[..., None])
    _, _, E, _, _ = solve_planar(rs.reshape(-1), rho[:, None].expand(B, K).reshape(-1), theta.reshape(-1),
                                 prior, n_nodes, r_init=None if r_init is None else r_init.reshape(B * K, -1))
    return E.reshape(B, K).sum(1) + w_of(prior)(rho)


@functools.lru_cache(maxsize=16)
def _regrid_matrix(n_from: int, n_to: int, device) -> torch.Tensor:
    """Linear interpolation in s from the Chebyshev grid of n_from chords to that of n_to:
    R_to = R_from @ Mᵀ, M (n_to+1, n_from+1)."""
    s_from, s_to = grid(n_from, device), grid(n_to, device)
    i = (torch.searchsorted(s_from, s_to, right=True) - 1).clamp(0, n_from - 1)
    f = (s_to - s_from[i]) / (s_from[i + 1] - s_from[i])
    M = torch.zeros(n_to + 1, n_from + 1, dtype=torch.float64, device=device)
    rows = torch.arange(n_to + 1, device=device)
    M[rows, i] = 1 - f
    M[rows, i + 1] += f
    return M


def _initial_radii(y, U, rs, prior, n_nodes):
    """Per path, the best of the polar lerp, LERP chord and shell curves from s_k to y
    (B, K, N+1), and the summed energy of those curves (an upper bound on F − w(ρ)) (B,)."""
    B, K, _ = U.shape
    rho, theta, *_ = _angles(y, U)
    ra, rb, th = rs.reshape(-1), rho[:, None].expand(B, K).reshape(-1), theta.reshape(-1)
    s = grid(n_nodes, y.device)
    cands = start_curves(ra, rb, th, s, float(prior.mode))
    c, _, _ = chord_constants(th, n_nodes)
    e = torch.nan_to_num(chord_energy(cands, c[:, None, :], w_of(prior), _JOINT_QUAD), nan=math.inf)
    k = e.argmin(1)
    R = cands[torch.arange(B * K, device=y.device), k].reshape(B, K, -1)
    return R, e.gather(1, k[:, None]).reshape(B, K).sum(1)


def _reduced_objective(y, U, rs, prior, n_nodes, warm):
    """F(y) with converged inner solves, and its gradient by the envelope theorem (the solver's
    ∂D/∂ρ and ∂D/∂θ_k, chained through ρ = |y| and θ_k by autograd). Returns F (B,),
    ∇F (B, K'), inner radii (B, K, N+1) (the next call's warm start)."""
    B, K = rs.shape
    w_fn = w_of(prior)
    y = y.detach().requires_grad_(True)
    with torch.enable_grad():
        rho = torch.linalg.vector_norm(y, dim=-1)
        along = (U * y[:, None, :]).sum(-1)
        perp2 = ((y[:, None, :] - along[..., None] * U) ** 2).sum(-1)
        theta = torch.atan2(torch.sqrt(torch.clamp(perp2, min=1e-300)), along)
        w_c = w_fn(rho)
    r, _, D, dD_drho, dD_dth = solve_planar(
        rs.reshape(-1), rho.detach()[:, None].expand(B, K).reshape(-1), theta.detach().reshape(-1), prior,
        n_nodes, r_init=None if warm is None else warm.reshape(B * K, -1))
    F = D.reshape(B, K).sum(-1) + w_c.detach()
    (g,) = torch.autograd.grad([rho, theta, w_c], y, grad_outputs=[
        dD_drho.reshape(B, K).sum(-1), dD_dth.reshape(B, K), torch.ones_like(w_c)])
    return F.detach(), g, r.reshape(B, K, -1)


def _bfgs_fallback(Y, y, prior, n_nodes, max_iter):
    """BFGS with Armijo backtracking on F(y) with converged inner solves: slower than the joint
    Newton but needs no Hessian, so it is indifferent to a path lying nearly on its seed's ray.
    Starts from the isotropic inverse Hessian scaled by the radial curvature w''(|y|)."""
    B, kp = y.shape
    rs = torch.linalg.vector_norm(Y, dim=-1)
    U = Y / rs[..., None]
    null = _null_mask(Y)
    F, g, warm = _reduced_objective(y, U, rs, prior, n_nodes, None)
    g = torch.where(null, 0.0, g)
    eye = torch.eye(kp, dtype=torch.float64, device=y.device)
    w2 = prior.neg_log_prob_derivatives(torch.linalg.vector_norm(y, dim=-1))[2]
    Hinv = eye / (Y.shape[1] + 1) / w2.clamp(min=1e-12)[:, None, None]
    active = torch.ones(B, dtype=torch.bool, device=y.device)
    for _ in range(max_iter):
        if not bool(active.any()):
            break
        p = -(Hinv @ g[..., None])[..., 0]
        slope = (p * g).sum(-1)
        p = torch.where((slope < 0)[:, None], p, -g / w2.clamp(min=1e-12)[:, None])
        slope = (p * g).sum(-1)
        alpha = torch.ones(B, dtype=torch.float64, device=y.device)
        accepted = ~active
        y_new, F_new, g_new, warm_new = y.clone(), F.clone(), g.clone(), warm.clone()
        for _ls in range(16):
            todo = ~accepted
            if not bool(todo.any()):
                break
            i = todo.nonzero().squeeze(1)
            yt = y[i] + alpha[i, None] * p[i]
            Ft, gt, wt = _reduced_objective(yt, U[i], rs[i], prior, n_nodes, warm[i])
            ok = Ft <= F[i] + _ARMIJO * alpha[i] * slope[i]
            j = i[ok]
            y_new[j], F_new[j], g_new[j], warm_new[j] = yt[ok], Ft[ok], torch.where(null[j], 0.0, gt[ok]), wt[ok]
            accepted[j] = True
            alpha[i[~ok]] *= 0.5
        sk, yk = y_new - y, g_new - g
        sy = (sk * yk).sum(-1)
        upd = active & accepted & (sy > 1e-300)
        if bool(upd.any()):
            rho = 1 / torch.where(upd, sy, 1.0)
            V = eye - rho[:, None, None] * sk[:, :, None] * yk[:, None, :]
            Hn = V @ Hinv @ V.transpose(1, 2) + rho[:, None, None] * sk[:, :, None] * sk[:, None, :]
            Hinv = torch.where(upd[:, None, None], Hn, Hinv)
        small = (F - F_new) <= _FALLBACK_FTOL * F.abs()
        y, F, g, warm = y_new, F_new, g_new, warm_new
        active = active & accepted & ~small
    return y


def general_centroid(Y, prior, n_nodes, max_iter, y_start=None):
    """Route 3 for seed coordinates Y (B, K, K'): returns y (B, K') and the index of the seed
    that is the minimiser itself (B,) (−1: none)."""
    B, K, kp = Y.shape
    rs = torch.linalg.vector_norm(Y, dim=-1)
    U = Y / rs[..., None]
    # 1. Start: the best of the mean, normalized and COG centroids (and a given start), ranked
    #    by F's upper bound through the best starting curves at a coarse resolution.
    m = Y.mean(1)
    mn = torch.linalg.vector_norm(m, dim=-1, keepdim=True)
    mean_dir = torch.where(mn > 0, m / mn.clamp(min=1e-300), Y[:, 0] / rs[:, :1])
    starts = [torch.where(mn > 0, m, Y[:, 0]), float(prior.mode) * mean_dir, math.sqrt(K) * m]
    starts = torch.stack(starts + ([] if y_start is None else [y_start]), 1)  # (B, S, K')
    S_n = starts.shape[1]
    sn = torch.linalg.vector_norm(starts, dim=-1)
    starts = torch.where(sn[..., None] > 0, starts, float(prior.mode) * mean_dir[:, None, :])
    coarse = min(n_nodes, _COARSE_NODES)
    flat = starts.reshape(B * S_n, kp)
    R0, bound = _initial_radii(flat, U.repeat_interleave(S_n, 0), rs.repeat_interleave(S_n, 0), prior, coarse)
    bound = bound + w_of(prior)(torch.linalg.vector_norm(flat, dim=-1))
    best = torch.nan_to_num(bound.reshape(B, S_n), nan=math.inf).argmin(1)
    pick = torch.arange(B, device=Y.device) * S_n + best
    y, R = flat[pick].clone(), R0[pick].clone()
    # 2. Joint Newton at the coarse resolution, then regrid the radii and finish at n_nodes. A
    #    concept that stops next to seed k keeps s_k if F(s_k) ≤ F(y), else goes on without
    #    that stop.
    seed = torch.full((B,), -1, dtype=torch.int64, device=Y.device)
    live = torch.ones(B, dtype=torch.bool, device=Y.device)
    phases = [coarse] + ([n_nodes] if coarse < n_nodes else [])
    for p, nodes in enumerate(phases):
        if p > 0:
            R[..., -1] = torch.linalg.vector_norm(y, dim=-1)[:, None]  # the state keeps a stale r_N
            R = R @ _regrid_matrix(phases[p - 1], nodes, Y.device).T
            R[..., 0] = rs
            # The interpolated curves miss the boundary layers at atypical seeds (F ~2% high at
            # d = 16384): converge the paths at fixed y first, each with its own line search;
            # the joint Newton then needs 2-3 steps instead of ~10 damped ones.
            i = live.nonzero().squeeze(1)
            rho, theta, *_ = _angles(y[i], U[i])
            r_fine, *_ = solve_planar(rs[i].reshape(-1), rho[:, None].expand(-1, K).reshape(-1), theta.reshape(-1),
                                      prior, nodes, r_init=R[i].reshape(-1, nodes + 1))
            R[i] = r_fine.reshape(len(i), K, nodes + 1)
        i = live.nonzero().squeeze(1)
        y[i], R[i], near, conv = _joint_newton(y[i], R[i], Y[i], prior, nodes, max_iter)
        if bool((near >= 0).any()):
            j, k = i[near >= 0], near[near >= 0]
            at_seed = objective(Y[j], Y[j, k], prior, nodes) <= objective(Y[j], y[j], prior, nodes)
            seed[j[at_seed]], live[j[at_seed]] = k[at_seed], False
            y[j[at_seed]] = Y[j[at_seed], k[at_seed]]
            jj = j[~at_seed]
            if jj.numel():
                y[jj], R[jj], _, conv_jj = _joint_newton(y[jj], R[jj], Y[jj], prior, nodes, max_iter,
                                                         stop_near_seed=False)
                conv[(near >= 0).nonzero().squeeze(1)[~at_seed]] = conv_jj
            conv[(near >= 0).nonzero().squeeze(1)[at_seed]] = True
        if p == len(phases) - 1 and not bool(conv.all()):
            j = i[~conv]
            y[j] = _bfgs_fallback(Y[j], y[j], prior, nodes, max_iter)
    return y, seed


# ------------------------------------------------------------------------------ route 2: K = 2


def _flat_tolerance(prior) -> float:
    """τ = ½·w''(mode)·(_FLAT_STD·std)²: w within τ of its minimum ⟺ the norm is within
    _FLAT_STD std of the best one (for a locally quadratic w)."""
    _, _, w2 = prior.neg_log_prob_derivatives(torch.tensor([float(prior.mode)], dtype=torch.float64))
    return 0.5 * float(w2[0]) * (_FLAT_STD * float(prior.std)) ** 2


def _radial_polish(Y, y0, prior, n_nodes, warm, iters: int = 8):
    """Minimise G(ρ) = Σ_k D(s_k, ρ·ŷ0) + w(ρ) along the ray of y0 (B, K'), seeds Y (B, K, K'),
    from the paths' radii ``warm`` (B·K, N+1). Newton on G' = Σ_k ∂D_k/∂ρ + w'(ρ) (envelope
    derivatives from the planar solver), with the curvature w''(ρ) first and secant estimates
    after, steps halved until G decreases. Returns the point (B, K'), G there (B,) and the
    paths' radii (B, K, N+1)."""
    B, K, _ = Y.shape
    rs = torch.linalg.vector_norm(Y, dim=-1)
    U = Y / rs[..., None]
    rho = torch.linalg.vector_norm(y0, dim=-1)
    yhat = y0 / rho[:, None]
    _, theta, *_ = _angles(y0, U)
    th, ra = theta.reshape(-1), rs.reshape(-1)

    def evaluate(rho, warm):
        r, _, E, dE, _ = solve_planar(ra, rho[:, None].expand(B, K).reshape(-1), th, prior, n_nodes, r_init=warm)
        w, w1, _ = prior.neg_log_prob_derivatives(rho)
        return E.reshape(B, K).sum(1) + w, dE.reshape(B, K).sum(1) + w1, r

    G, dG, warm = evaluate(rho, warm)
    h = prior.neg_log_prob_derivatives(rho)[2]
    for _ in range(iters):
        step = -dG / h.clamp(min=1e-12)
        for _half in range(8):
            rho_t = (rho + step).clamp(min=1e-3 * float(prior.mode))
            Gt, dGt, warm_t = evaluate(rho_t, warm)
            ok = Gt <= G
            if bool(ok.all()):
                break
            step = torch.where(ok, step, step / 2)
        ok = Gt <= G
        secant = (dGt - dG) / torch.where((rho_t - rho) != 0, rho_t - rho, 1.0)
        h = torch.where(ok & (secant > 0), secant, h)
        moved = (rho_t - rho).abs()
        rho = torch.where(ok, rho_t, rho)
        G, dG = torch.where(ok, Gt, G), torch.where(ok, dGt, dG)
        warm = torch.where(ok[:, None].repeat_interleave(K, 0), warm_t, warm)
        if bool((moved <= 1e-6 * float(prior.std)).all()):
            break
    return rho[:, None] * yhat, G, warm.reshape(B, K, -1)


def _sub_geodesic_radii(r, phi, phi_c, n_nodes):
    """Radii of the pieces of planar geodesics (r, φ) (B, N+1) from each end to the point at
    angle φ_c (B,), on the Chebyshev grid of each piece: (B, 2, N+1) (linear in φ between
    nodes). A sub-arc of a geodesic is a geodesic: the warm start of the two centroid paths."""
    s = grid(n_nodes, r.device)
    theta = phi[:, -1:]
    q = torch.stack([phi_c[:, None] * s, theta - (theta - phi_c[:, None]) * s], 1)  # (B, 2, N+1)
    B = r.shape[0]
    qf = q.reshape(B, -1)
    i = (torch.searchsorted(phi.contiguous(), qf.contiguous(), right=True) - 1).clamp(0, phi.shape[1] - 2)
    p0, p1 = phi.gather(1, i), phi.gather(1, i + 1)
    f = ((qf - p0) / torch.where(p1 > p0, p1 - p0, 1.0)).clamp(0, 1)
    out = r.gather(1, i) * (1 - f) + r.gather(1, i + 1) * f
    return out.reshape(B, 2, -1)


def pair_centroid(Y, prior, n_nodes):
    """Route 2 for K = 2 coordinates Y (B, 2, K'): returns y (B, K') and whether the geodesic
    reaches the shell (B,) (where not, y is only the start of the general route)."""
    a, b = Y[:, 0], Y[:, 1]
    ra, rb, theta, e1, e2 = geodesic_plane(a, b, 1e-12)
    r, phi, D12, _, _ = solve_planar(ra, rb, theta, prior, n_nodes)
    px, py, norms, arc = chord_points(r, phi, 8)
    w_fn = w_of(prior)
    wv = w_fn(norms)
    tau = _flat_tolerance(prior)
    w_min = wv.amin(1, keepdim=True)
    central = torch.where(wv <= w_min + tau, (arc - 0.5).abs(), math.inf).argmin(1, keepdim=True)
    y0 = px.gather(1, central) * e1 + py.gather(1, central) * e2
    w_mode = float(w_fn(torch.tensor([float(prior.mode)], dtype=torch.float64))[0])
    on_shell = w_min[:, 0] <= w_mode + tau
    y = y0.clone()
    if bool(on_shell.any()):
        i = on_shell.nonzero().squeeze(1)
        phi_c = torch.atan2(py.gather(1, central), px.gather(1, central))[:, 0]
        warm = _sub_geodesic_radii(r[i], phi[i], phi_c[i], n_nodes)
        y[i], F_y, warm = _radial_polish(Y[i], y0[i], prior, n_nodes, warm.reshape(-1, n_nodes + 1))
        # F is flat along the shell to below the geodesics' discretisation error, so a baseline
        # centroid can score lower; keep the best (all candidates are symmetric in the seeds).
        # A candidate c cannot win where D(s_1, s_2) + w(|c|) (the triangle-inequality bound,
        # less a margin for discretisation) exceeds F(y): only those that can are solved.
        m = Y[i].mean(1)
        mn = torch.linalg.vector_norm(m, dim=-1, keepdim=True).clamp(min=1e-300)
        for cand in (float(prior.mode) * m / mn, math.sqrt(2) * m, m):
            rc = torch.linalg.vector_norm(cand, dim=-1)
            maybe = (rc > 0) & (D12[i] + w_fn(rc) <= F_y * (1 + _BOUND_SLACK))
            if bool(maybe.any()):
                j = maybe.nonzero().squeeze(1)
                F_c = objective(Y[i[j]], cand[j], prior, n_nodes, r_init=warm[j])
                better = F_c < F_y[j]
                y[i[j[better]]] = cand[j[better]]
                F_y[j[better]] = F_c[better]
    return y, on_shell


# ------------------------------------------------------------------------------ public API


def _centroid_impl(seeds, prior, n_nodes, max_iter):
    # 1. Check inputs.
    check_seeds("seeds", seeds, min_dim=2)
    if seeds.shape[-2] == 0:
        raise ValueError(f"seeds must have shape (..., K, d) with K ≥ 1, got {tuple(seeds.shape)}")
    *batch, K, d = seeds.shape
    if d < 2:
        raise ValueError(f"seeds must have d ≥ 2 (the last dimension), got shape {tuple(seeds.shape)}")
    if n_nodes < 4:
        raise ValueError(f"n_nodes must be ≥ 4, got {n_nodes}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be ≥ 1, got {max_iter}")
    prior = check_prior(prior, d)
    dtype = out_dtype(seeds)
    S = seeds.reshape(-1, K, d).to(torch.float64)
    B = S.shape[0]
    # 2. Coordinates in span(seeds); route each concept.
    Y, A, keep = span_coordinates(S)
    rank = keep.sum(1)
    lead = Y[:, :, -1]  # rank 1: every seed is ± the top eigenvector
    one_ray = (rank == 1) & ((lead > 0).all(1) | (lead < 0).all(1))
    line = (rank == 1) & ~one_ray
    y = torch.zeros(B, Y.shape[2], dtype=torch.float64, device=S.device)
    exact = torch.full((B,), -1, dtype=torch.int64, device=S.device)  # index of a returned seed
    # 3. Route 1: one ray.
    if bool(one_ray.any()):
        i = one_ray.nonzero().squeeze(1)
        rs = torch.linalg.vector_norm(Y[i], dim=-1)
        rho, seed = ray_centroid(rs, prior)
        y[i] = rho[:, None] * Y[i, 0] / rs[:, :1]
        exact[i] = seed
    # 4. Routes 2 (K = 2) and 3 (the rest), batched.
    rest = ~one_ray & ~line
    if bool(rest.any()):
        i = rest.nonzero().squeeze(1)
        y[i], exact[i] = _routes_2_3(Y[i], prior, n_nodes, max_iter)
    # 5. Lift: c = Sᵀ·α, α = A·y (float64).
    alpha = (A @ y[..., None])[..., 0]
    c = (alpha[:, None, :] @ S)[:, 0]
    # 6. Seeds on one line through the origin on both sides (s and −s): the span is that line
    #    but the minimisers lie off it, on a circle around it. Solve in the plane of the line and
    #    a fixed spread direction ⟂ it (as for antipodal geodesics), from a start on that circle.
    if bool(line.any()):
        i = line.nonzero().squeeze(1)
        e1 = S[i, 0] / torch.linalg.vector_norm(S[i, 0], dim=-1, keepdim=True)
        e2 = spread_orthogonal(e1)
        Y2 = torch.zeros(len(i), K, 2, dtype=torch.float64, device=S.device)
        Y2[..., 0] = (S[i] * e1[:, None]).sum(-1)
        y_start = torch.zeros(len(i), 2, dtype=torch.float64, device=S.device)
        y_start[:, 1] = float(prior.mode)
        y2, exact[i] = _routes_2_3(Y2, prior, n_nodes, max_iter, y_start=y_start)
        c[i] = y2[:, :1] * e1 + y2[:, 1:] * e2
    # 7. Cast once; a seed that is the minimiser is returned exactly.
    out = c.to(dtype)
    hit = exact >= 0
    if bool(hit.any()):
        i = hit.nonzero().squeeze(1)
        out[i] = seeds.reshape(-1, K, d)[i, exact[i]].to(dtype)
    return out.reshape(*batch, d), prior


def _routes_2_3(Y, prior, n_nodes, max_iter, y_start=None):
    """Routes 2 (K = 2) and 3 for seed coordinates Y (B, K, K'): y (B, K') and the index of a
    seed that is the minimiser itself (B,) (−1: none)."""
    B, K, _ = Y.shape
    y = torch.zeros(B, Y.shape[2], dtype=torch.float64, device=Y.device)
    exact = torch.full((B,), -1, dtype=torch.int64, device=Y.device)
    todo = torch.ones(B, dtype=torch.bool, device=Y.device)
    if K == 2:
        y, on_shell = pair_centroid(Y, prior, n_nodes)
        todo = ~on_shell
        y_start = y.clone()
    if bool(todo.any()):
        i = todo.nonzero().squeeze(1)
        y[i], exact[i] = general_centroid(Y[i], prior, n_nodes, max_iter,
                                          y_start=None if y_start is None else y_start[i])
    return y, exact


def nao_centroid(seeds: torch.Tensor, *, prior=None, n_nodes: int = DEFAULT_NODES, max_iter: int = 50) -> torch.Tensor:
    """NAO centroid argmin_c Σ_k D(s_k, c) − log p(|c|): seeds (..., K, d) → (..., d).

    Leading dimensions are independent concepts solved in one batch, e.g. (B, K, d) for B
    concepts of K seeds each (cheaper than a loop: the solvers' per-call costs are shared).
    Any K ≥ 1 and d ≥ 2, K > d included. Computed in float64 and cast once to the seeds' dtype.
    Routes (module doc; README.md §5): seeds on one ray → a 1-D problem (K = 1: the
    seed itself where it minimises F, else the point of its ray that does); K = 2 → the point
    of their geodesic on the shell nearest its middle, exact to the lower bound
    D(s_1, s_2) + w(mode) where the geodesic reaches the shell; otherwise joint Newton in
    span(seeds), never worse than the mean, normalized and COG centroids it starts from.
    ``n_nodes`` is the resolution N of each geodesic, ``max_iter`` caps the Newton iterations.
    """
    c, _ = _centroid_impl(seeds, prior, n_nodes, max_iter)
    return c


def nao_centroid_paths(seeds: torch.Tensor, t: torch.Tensor, *, prior=None, n_nodes: int = DEFAULT_NODES):
    """NAO centroid and the NAO paths from it to each seed.

    seeds (..., K, d), t (T,) → (centroid (..., d), paths (..., K, T, d)); paths[..., k, :, :]
    runs from the centroid (t = 0) to seed k (t = 1).
    """
    t = check_t(t)
    c, prior = _centroid_impl(seeds, prior, n_nodes, 50)
    dtype = out_dtype(seeds)
    paths = nao_interpolate(c[..., None, :], seeds.to(dtype), t, prior=prior, n_nodes=n_nodes)
    return c, paths
