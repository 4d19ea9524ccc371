"""The paper's reference solver (Samuel et al., NeurIPS 2023, code dvirsamuel/SeedSelect nao/),
as NAO.md states it, vectorised over the batch. For reproduction and comparison only.

Notation: x_0..x_{n−1} path points in ambient coordinates (x_0 = a, x_{n−1} = b fixed),
objective  Σᵢ |xᵢ₊₁ − xᵢ|·w(|(xᵢ + xᵢ₊₁)/2|) + penalty·Σᵢ relu(|xᵢ₊₁ − xᵢ| − ε),
ε = 2·|a − b|/n (midpoint rule: a segment may "tunnel", see NAO.md), Adam on all interior
coordinates, early stop when |Δloss| < tol for ``patience`` steps in a row.

Two details matter for reproducing the reference numbers:
- The reference evaluates the chi log-density naively in float32,
  (d−1)·log r − r²/2 − ((d/2 − 1)·log 2 + lgamma(d/2)), whose terms (~8e4) round to ~0.01, and
  Adam exploits that rounding: with the exact w (``ChiPrior.log_prob``) 2,000 steps end at a
  midpoint objective ~0.6% higher than with the naive one. ``naive_log_prob=True`` (default)
  uses the reference's formula for a ``ChiPrior``; other priors always use their ``log_prob``.
- The gradient is formed in closed form (no autograd graph over the n × d path):
  ∂/∂xᵢ₊₁ = (w(μᵢ) + penalty·[lᵢ > ε])·Δᵢ/lᵢ + lᵢ·w'(μᵢ)·mᵢ/(2μᵢ), ∂/∂xᵢ = the same with −Δᵢ,
  Δᵢ = xᵢ₊₁ − xᵢ, lᵢ = |Δᵢ|, mᵢ = (xᵢ + xᵢ₊₁)/2, μᵢ = |mᵢ|; w' by autograd on the scalars μᵢ.
"""

from __future__ import annotations

import torch

from ._numerics import check_prior, check_same_dim, check_seeds, out_dtype


def _w_and_derivative(prior, d: int, dtype, naive_log_prob: bool):
    """Returns μ ↦ (w(μ), w'(μ)) in ``dtype`` for radii μ (any shape)."""
    if naive_log_prob and hasattr(prior, "neg_log_prob_derivatives") and getattr(prior, "d", None) == d:
        const = ((0.5 * d - 1) * torch.log(torch.tensor(2.0, dtype=dtype))
                 + torch.lgamma(torch.tensor(d / 2, dtype=dtype)))

        def naive(mu):  # the reference's float32 expression, term by term
            return -(((d - 1) * torch.log(mu) - 0.5 * torch.pow(mu, 2)) - const), mu - (d - 1) / mu

        return naive

    def generic(mu):
        m = mu.detach().requires_grad_(True)
        with torch.enable_grad():
            w = -prior.log_prob(m).to(dtype)
            (dw,) = torch.autograd.grad(w.sum(), m)
        return w.detach(), dw

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


@torch.no_grad()
def paper_centroid(seeds, n: int = 50, *, prior=None, lr: float = 0.01, max_steps: int = 10_000,
                   tol: float = 1e-2, patience: int = 5, penalty: float = 1.0, noise: float = 0.01,
                   seed: int = 0, dtype=torch.float32, naive_log_prob: bool = True,
                   return_info: bool = False):
    """The paper's centroid: one n-point path from each seed to a free centroid c, optimised
    jointly with c, objective Σ_k path_k + (−log p(|c|)). seeds (..., K, d) → (..., d).

    c starts at the Euclidean mean; ε of each path is fixed from its initial endpoints.
    """
    check_seeds("seeds", seeds, min_dim=2, nonzero=False)
    *batch, K, d = seeds.shape
    prior = check_prior(prior, d)
    odt = out_dtype(seeds)
    S = seeds.reshape(-1, K, d).to(dtype)
    c = S.mean(1).clone()
    s = torch.linspace(0, 1, n, dtype=dtype, device=seeds.device)[:, None]
    gen = torch.Generator(device="cpu").manual_seed(seed)
    x = (1 - s) * S[:, :, None] + s * c[:, None, None]  # (B, K, n, d)
    x[:, :, 1:-1] += noise * torch.rand((S.shape[0], K, n - 2, d), generator=gen, dtype=dtype).to(seeds.device)
    inner = x[:, :, 1:-1]
    eps_len = 2 * torch.linalg.vector_norm(S - c[:, None], dim=-1) / n  # (B, K)
    w_dw = _w_and_derivative(prior, d, dtype, naive_log_prob)

    def objective_and_grads():
        x[:, :, -1] = c[:, None]
        obj, grad = _midpoint_objective_and_grad(x, w_dw, eps_len, penalty)
        rc = torch.linalg.vector_norm(c, dim=-1)
        wc, dwc = w_dw(rc)
        g_c = grad[:, :, -1].sum(1) + (dwc / rc.clamp(min=1e-30))[:, None] * c
        return obj.sum(-1) + wc, [grad[:, :, 1:-1], g_c]

    obj, steps = _run(x, [inner, c], objective_and_grads, lr, max_steps, tol, patience)
    out = c.to(odt).reshape(*batch, d)
    if return_info:
        return out, {"objective": obj.reshape(batch), "steps": steps.reshape(batch)}
    return out
