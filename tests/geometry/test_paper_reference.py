"""paper_reference_seeds follows the reference call site (SeedSelect main.py, NAO_SeedSelect):
two inversions, SLERP(0.5) start, one ε for both paths, the interior points of both centroid
paths as seeds, never the centroid itself."""

import numpy as np
import pytest
import torch

from normguide.geometry import ChiPrior, paper_centroid, paper_reference_seeds
from normguide.geometry.paper import _midpoint_objective_and_grad, _reference_slerp, _w_and_derivative

D = 64


def reference_slerp(t, v0, v1, DOT_THRESHOLD=0.9995):
    """main.py's slerp, verbatim but for the CUDA transfer."""
    v0, v1 = v0.cpu().numpy(), v1.cpu().numpy()
    dot = np.sum(v0 * v1 / (np.linalg.norm(v0) * np.linalg.norm(v1)))
    if np.abs(dot) > DOT_THRESHOLD:
        v2 = (1 - t) * v0 + t * v1
    else:
        theta_0 = np.arccos(dot)
        sin_theta_0 = np.sin(theta_0)
        theta_t = theta_0 * t
        sin_theta_t = np.sin(theta_t)
        s0 = np.sin(theta_0 - theta_t) / sin_theta_0
        s1 = sin_theta_t / sin_theta_0
        v2 = s0 * v0 + s1 * v1
    return torch.from_numpy(v2)


def inversions(d=D, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(2, d, generator=g)
    return s / s.norm(dim=-1, keepdim=True) * ChiPrior(d).mode * torch.tensor([[0.8], [0.85]])


def test_slerp_start_is_the_reference_slerp():
    p1, p2 = inversions()
    torch.testing.assert_close(_reference_slerp(0.5, p1[None], p2[None])[0], reference_slerp(0.5, p1, p2),
                               rtol=1e-6, atol=1e-6)
    near = p1 + 1e-4 * p2  # |cos θ| > 0.9995: the reference falls back to LERP
    torch.testing.assert_close(_reference_slerp(0.5, p1[None], near[None])[0], reference_slerp(0.5, p1, near),
                               rtol=1e-6, atol=1e-6)


def test_start_paths_epsilon_and_layout():
    """With no Adam step: the centroid is SLERP(0.5), the seeds are the chord points from each
    inversion to it (plus U(0, 0.01) noise), p1's path first, and the objective uses one
    ε = 2·|p1 − p2|/n for both paths."""
    n = 50
    S = inversions()
    c, seeds, info = paper_reference_seeds(S, n, max_steps=0, return_info=True)
    assert c.shape == (D,) and seeds.shape == (2 * (n - 2), D)
    torch.testing.assert_close(c, _reference_slerp(0.5, S[:1], S[1:])[0])
    frac = torch.linspace(0, 1, n)[1:-1, None]
    for k in range(2):
        chord = (1 - frac) * S[k] + frac * c
        noise = seeds[k * (n - 2):(k + 1) * (n - 2)] - chord
        assert noise.min() >= -1e-5 and noise.max() <= 0.01 + 1e-5
    eps_one = 2 * (S[0] - S[1]).norm() / n
    x = torch.stack([torch.cat([S[k:k + 1], seeds[k * (n - 2):(k + 1) * (n - 2)], c[None]]) for k in range(2)])[None]
    w_dw = _w_and_derivative(ChiPrior(D), D, torch.float32, True)
    obj, _ = _midpoint_objective_and_grad(x.clone(), w_dw, eps_one.expand(1, 2), 1.0)
    wc = w_dw(c.norm())[0]
    torch.testing.assert_close(info["objective"], obj.sum() + wc, rtol=1e-5, atol=1e-3)


def test_seeds_never_include_the_centroid_and_batch():
    S = torch.stack([inversions(seed=0), inversions(seed=1)])
    c, seeds = paper_reference_seeds(S, 20, max_steps=30)
    assert c.shape == (2, D) and seeds.shape == (2, 36, D)
    assert ((seeds - c[:, None]).norm(dim=-1) > 1e-3).all()
    c0, _ = paper_reference_seeds(S[0], 20, max_steps=30)
    torch.testing.assert_close(c0, c[0])


@pytest.mark.parametrize("K", [1, 3, 5])
def test_other_k_raises(K):
    S = torch.randn(K, D)
    with pytest.raises(ValueError, match=f"K = {K}.*paper_centroid"):
        paper_reference_seeds(S)
    assert paper_centroid(S, 10, max_steps=5).shape == (D,)  # the generalisation takes any K
