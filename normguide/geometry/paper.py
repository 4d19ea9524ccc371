"""The paper's reference solver and pipeline (Samuel et al., NeurIPS 2023; code
dvirsamuel/SeedSelect, nao/norm_aware_optimization.py and its call site in main.py),
vectorised over the batch. For reproduction and comparison only (README.md, §6 "The paper's
solver, and how its reference code differs").

Notation: x_0..x_{n−1} path points in ambient coordinates (x_0 = a, x_{n−1} = b fixed),
objective  Σᵢ |xᵢ₊₁ − xᵢ|·w(|(xᵢ + xᵢ₊₁)/2|) + penalty·Σᵢ relu(|xᵢ₊₁ − xᵢ| − ε),
ε = 2·|a − b|/n (midpoint rule: a segment may "tunnel" through a low-likelihood zone), Adam on
all interior coordinates, early stop when |Δloss| < tol for ``patience`` steps in a row.

Two details matter for reproducing the reference numbers:
- The reference evaluates the chi log-density naively in float32,
  (d−1)·log r − r²/2 − ((d/2 − 1)·log 2 + lgamma(d/2)), whose terms (~8e4) round to ~0.01, and
  Adam exploits that rounding: with the exact w (``ChiPrior.log_prob``) 2,000 steps end at a
  midpoint objective ~0.6% higher than with the naive one. ``naive_log_prob=True`` (default)
  uses the reference's formula for a ``ChiPrior``; other priors always use their own w.
- The gradient is formed in closed form (no autograd graph over the n × d path):
  ∂/∂xᵢ₊₁ = (w(μᵢ) + penalty·[lᵢ > ε])·Δᵢ/lᵢ + lᵢ·w'(μᵢ)·mᵢ/(2μᵢ), ∂/∂xᵢ = the same with −Δᵢ,
  Δᵢ = xᵢ₊₁ − xᵢ, lᵢ = |Δᵢ|, mᵢ = (xᵢ + xᵢ₊₁)/2, μᵢ = |mᵢ|.
"""

from __future__ import annotations

import torch

from ._numerics import check_prior, check_same_dim, check_seeds, out_dtype
from .prior import ChiPrior


def _w_and_derivative(prior, d: int, dtype, naive_log_prob: bool):
    """Returns μ ↦ (w(μ), w'(μ)) in ``dtype`` for radii μ (any shape)."""
    if naive_log_prob and isinstance(prior, ChiPrior) and prior.d == d:
        const = ((0.5 * d - 1) * torch.log(torch.tensor(2.0, dtype=dtype))
                 + torch.lgamma(torch.tensor(d / 2, dtype=dtype)))

        def naive(mu):  # the reference's float32 expression, term by term
            return -(((d - 1) * torch.log(mu) - 0.5 * torch.pow(mu, 2)) - const), mu - (d - 1) / mu

        return naive

    def generic(mu):
        w, dw, _ = prior.neg_log_prob_derivatives(mu.to(torch.float64))
        return w.to(dtype), dw.to(dtype)

    return generic


def _midpoint_objective_and_grad(x, w_dw, eps_len, penalty):
    """Objective (...) and its gradient (..., n, d) for paths x (..., n, d) (see module doc)."""
    seg = x[..., 1:, :] - x[..., :-1, :]
    mid2 = x[..., 1:, :] + x[..., :-1, :]  # 2·mᵢ
    length = torch.linalg.vector_norm(seg, dim=-1).clamp(min=1e-30)
    mu = torch.linalg.vector_norm(mid2, dim=-1) / 2
    w, dw = w_dw(mu)
    over = length > eps_len[..., None]
    obj = (length * w).sum(-1) + penalty * torch.relu(length - eps_len[..., None]).sum(-1)
    seg.mul_(((w + penalty * over.to(w.dtype)) / length)[..., None])  # now ∂/∂xᵢ₊₁ via Δᵢ
    mid2.mul_((length * dw / (4 * mu.clamp(min=1e-30)))[..., None])  # now ∂/∂xᵢ₊₁ via μᵢ
    grad = torch.zeros_like(x)
    grad[..., 1:, :] += seg
    grad[..., 1:, :] += mid2
    grad[..., :-1, :] += mid2
    grad[..., :-1, :] -= seg
    return obj, grad


class _Adam:
    """Adam (β = 0.9, 0.999, eps 1e-8, as torch.optim.Adam) whose updates can be masked per
    batch element."""

    def __init__(self, x, lr):
        self.lr, self.t = lr, 0
        self.m, self.v = torch.zeros_like(x), torch.zeros_like(x)

    def step(self, x, g, mask):
        self.t += 1
        b1, b2 = 0.9, 0.999
        self.m.mul_(b1).add_(g, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (self.v / (1 - b2**self.t)).sqrt_().add_(1e-8)
        x.addcdiv_(self.m * (mask * (-self.lr / (1 - b1**self.t))), denom)


def _run(points, params, objective_and_grads, lr, max_steps, tol, patience):
    """Masked Adam on ``params`` (tensors with batch dim 0, updated in place) until each batch
    element's loss changed by < tol for ``patience`` consecutive steps, or max_steps.
    ``objective_and_grads()`` returns the loss (B,) and one gradient per param."""
    B = params[0].shape[0]
    dev = params[0].device
    opts = [_Adam(p, lr) for p in params]
    active = torch.ones(B, dtype=torch.bool, device=dev)
    calm = torch.zeros(B, dtype=torch.long, device=dev)
    steps = torch.zeros(B, dtype=torch.long, device=dev)
    prev = None
    for _ in range(max_steps):
        loss, grads = objective_and_grads()
        for p, g, o in zip(params, grads, opts):
            o.step(p, g, active.to(p.dtype).view(-1, *[1] * (p.dim() - 1)))
        if prev is not None:
            calm = torch.where((loss - prev).abs() < tol, calm + 1, torch.zeros_like(calm))
        prev = loss
        steps += active.long()
        active &= calm < patience
        if not bool(active.any()):
            break
    final, _ = objective_and_grads()
    return final, steps


@torch.no_grad()
def paper_interpolate(a, b, n: int = 50, *, prior=None, lr: float = 0.01, max_steps: int = 10_000,
                      tol: float = 1e-3, patience: int = 10, penalty: float = 1.0, noise: float = 0.01,
                      seed: int = 0, dtype=torch.float32, naive_log_prob: bool = True,
                      return_info: bool = False):
    """The paper's interpolation: n path points (..., n, d) from a to b (see module doc).

    Started on the chord plus U(0, noise) noise from ``torch.Generator().manual_seed(seed)``;
    computed in ``dtype`` (float32, as the reference code). With ``return_info`` also returns
    {"objective": final midpoint objective (...), "steps": steps taken (...)}.
    """
    check_seeds("a", a, nonzero=False)
    check_seeds("b", b, nonzero=False)
    batch = check_same_dim("a", a, "b", b)
    d = a.shape[-1]
    prior = check_prior(prior, d)
    odt = out_dtype(a, b)
    A = a.expand(*batch, d).reshape(-1, d).to(dtype)
    Bv = b.expand(*batch, d).reshape(-1, d).to(dtype)
    s = torch.linspace(0, 1, n, dtype=dtype, device=a.device)[:, None]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = (1 - s) * A[:, None] + s * Bv[:, None]  # (B, n, d); endpoints stay fixed
    x[:, 1:-1] += noise * torch.rand((A.shape[0], n - 2, d), generator=gen, dtype=dtype).to(a.device)
    inner = x[:, 1:-1]  # a view: Adam updates x in place
    eps_len = 2 * torch.linalg.vector_norm(A - Bv, dim=-1) / n
    w_dw = _w_and_derivative(prior, d, dtype, naive_log_prob)

    def objective_and_grads():
        obj, grad = _midpoint_objective_and_grad(x, w_dw, eps_len, penalty)
        return obj, [grad[:, 1:-1]]

    obj, steps = _run(x, [inner], objective_and_grads, lr, max_steps, tol, patience)
    out = x.to(odt).reshape(*batch, n, d)
    if return_info:
        return out, {"objective": obj.reshape(batch), "steps": steps.reshape(batch)}
    return out


def _centroid_adam(S, c0, eps_len, n, prior, lr, max_steps, tol, patience, penalty, noise, seed, dtype,
                   naive_log_prob):
    """The reference centroid optimisation for seeds S (B, K, d) and start c0 (B, d), in
    ``dtype``: one n-point path from each seed to the free centroid c (chord plus U(0, noise)
    noise on the interior), optimised jointly with c by Adam on Σ_k path_k + w(|c|).
    eps_len (B, K) is each path's ε. Returns c (B, d), paths x (B, K, n, d), objective, steps."""
    B, K, d = S.shape
    c = c0.clone()
    s = torch.linspace(0, 1, n, dtype=dtype, device=S.device)[:, None]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = (1 - s) * S[:, :, None] + s * c[:, None, None]  # (B, K, n, d)
    x[:, :, 1:-1] += noise * torch.rand((B, K, n - 2, d), generator=gen, dtype=dtype).to(S.device)
    inner = x[:, :, 1:-1]
    w_dw = _w_and_derivative(prior, d, dtype, naive_log_prob)

    def objective_and_grads():
        x[:, :, -1] = c[:, None]
        obj, grad = _midpoint_objective_and_grad(x, w_dw, eps_len, penalty)
        rc = torch.linalg.vector_norm(c, dim=-1)
        wc, dwc = w_dw(rc)
        g_c = grad[:, :, -1].sum(1) + (dwc / rc.clamp(min=1e-30))[:, None] * c
        return obj.sum(-1) + wc, [grad[:, :, 1:-1], g_c]

    obj, steps = _run(x, [inner, c], objective_and_grads, lr, max_steps, tol, patience)
    x[:, :, -1] = c[:, None]
    return c, x, obj, steps


@torch.no_grad()
def paper_centroid(seeds, n: int = 50, *, prior=None, lr: float = 0.01, max_steps: int = 10_000,
                   tol: float = 1e-2, patience: int = 5, penalty: float = 1.0, noise: float = 0.01,
                   seed: int = 0, dtype=torch.float32, naive_log_prob: bool = True,
                   return_info: bool = False):
    """The paper's centroid optimisation generalised to any K: one n-point path from each seed
    to a free centroid c, optimised jointly with c, objective Σ_k path_k + (−log p(|c|)).
    seeds (..., K, d) → (..., d).

    Differs from the reference call site (use ``paper_reference_seeds`` to reproduce that):
    c starts at the Euclidean mean (the reference: SLERP(0.5) of its two seeds), and each path
    has its own ε = 2·|s_k − c_start|/n (the reference: one ε = 2·|s_1 − s_2|/n for both).
    """
    check_seeds("seeds", seeds, min_dim=2, nonzero=False)
    *batch, K, d = seeds.shape
    prior = check_prior(prior, d)
    odt = out_dtype(seeds)
    S = seeds.reshape(-1, K, d).to(dtype)
    c0 = S.mean(1)
    eps_len = 2 * torch.linalg.vector_norm(S - c0[:, None], dim=-1) / n  # (B, K)
    c, _, obj, steps = _centroid_adam(S, c0, eps_len, n, prior, lr, max_steps, tol, patience, penalty,
                                      noise, seed, dtype, naive_log_prob)
    out = c.to(odt).reshape(*batch, d)
    if return_info:
        return out, {"objective": obj.reshape(batch), "steps": steps.reshape(batch)}
    return out


def _reference_slerp(t: float, v0: torch.Tensor, v1: torch.Tensor, dot_threshold: float = 0.9995):
    """main.py's slerp (Karpathy's gist): LERP where |cos θ| > dot_threshold, else the SLERP
    formula. (B, d) → (B, d); computed in float64 (the reference: numpy in the seeds' float32)."""
    a, b = v0.double(), v1.double()
    dot = (a * b).sum(-1) / (torch.linalg.vector_norm(a, dim=-1) * torch.linalg.vector_norm(b, dim=-1))
    theta0 = torch.arccos(dot.clamp(-1, 1))
    sin0 = torch.sin(theta0)
    lin = dot.abs() > dot_threshold
    sin0 = torch.where(lin, 1.0, sin0)
    s0 = torch.where(lin, 1 - t, torch.sin(theta0 - theta0 * t) / sin0)
    s1 = torch.where(lin, t, torch.sin(theta0 * t) / sin0)
    return (s0[:, None] * a + s1[:, None] * b).to(v0.dtype)


@torch.no_grad()
def paper_reference_seeds(seeds, n: int = 50, *, prior=None, lr: float = 0.01, max_steps: int = 10_000,
                          tol: float = 1e-2, patience: int = 5, penalty: float = 1.0, noise: float = 0.01,
                          seed: int = 0, dtype=torch.float32, naive_log_prob: bool = True,
                          return_info: bool = False):
    """The paper's pipeline as its reference call site runs it (SeedSelect main.py,
    ``NAO_SeedSelect``): the NAO centroid of two inversions and the seeds its images start from.

    seeds (..., 2, d) → (centroid (..., d), seeds (..., 2·(n−2), d)). Exactly as the reference:
      1. K = 2 inversions p1, p2 (any other K raises ``ValueError``; ``paper_centroid`` is the
         generalisation to any K);
      2. one ε = 2·|p1 − p2|/n for both paths;
      3. c starts at the reference's SLERP(0.5, p1, p2) (LERP where |cos θ| > 0.9995; an
         all-zero start is replaced by U(0, 0.01) noise, as there);
      4. a path of n points from each inversion to c (chord plus U(0, ``noise``) noise),
         optimised jointly with c by Adam (lr 0.01) on the midpoint objective + w(|c|), early
         stop when |Δloss| < 0.01 for 5 steps, at most 10,000 steps;
      5. the returned seeds are the n − 2 interior points of p1's path (from p1 towards c)
         followed by those of p2's path: the reference generates one image per such point
         (2 × 48 for n = 50) and none from the centroid itself.
    With ``return_info`` also returns {"objective", "steps"} (...).
    """
    check_seeds("seeds", seeds, min_dim=2, nonzero=False)
    *batch, K, d = seeds.shape
    if K != 2:
        raise ValueError(f"paper_reference_seeds follows the reference call site, which takes exactly "
                         f"K = 2 inversions; got seeds of shape {tuple(seeds.shape)} (K = {K}). "
                         f"paper_centroid generalises the optimisation to any K")
    if n < 3:
        raise ValueError(f"n must be ≥ 3 (n − 2 interior points per path), got {n}")
    prior = check_prior(prior, d)
    odt = out_dtype(seeds)
    S = seeds.reshape(-1, 2, d).to(dtype)
    c0 = _reference_slerp(0.5, S[:, 0], S[:, 1])
    zero = (c0 == 0).all(-1)
    if bool(zero.any()):
        gen = torch.Generator(device="cpu").manual_seed(seed + 1)
        c0[zero] = torch.rand((int(zero.sum()), d), generator=gen, dtype=dtype).to(S.device) / 100
    eps_len = (2 * torch.linalg.vector_norm(S[:, 0] - S[:, 1], dim=-1) / n)[:, None].expand(-1, 2)
    c, x, obj, steps = _centroid_adam(S, c0, eps_len.contiguous(), n, prior, lr, max_steps, tol, patience,
                                      penalty, noise, seed, dtype, naive_log_prob)
    centroid = c.to(odt).reshape(*batch, d)
    out_seeds = x[:, :, 1:-1].reshape(-1, 2 * (n - 2), d).to(odt).reshape(*batch, 2 * (n - 2), d)
    if return_info:
        return centroid, out_seeds, {"objective": obj.reshape(batch), "steps": steps.reshape(batch)}
    return centroid, out_seeds
