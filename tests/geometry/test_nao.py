import pytest
import torch

from normguide.geometry import (
    ChiPrior,
    centroid_energy,
    cog_centroid,
    geodesic_energy,
    lerp,
    mean_centroid,
    nao_centroid,
    nao_centroid_paths,
    nao_interpolate,
    normalized_centroid,
    paper_centroid,
    paper_interpolate,
    path_energy,
    planar,
    slerp,
)

from .conftest import REGIMES, TOL, make_pair

T50 = torch.linspace(0, 1, 50)


@pytest.mark.parametrize("regime", REGIMES)
def test_endpoints_exact_and_dtype(regime, seed, dtype):
    a, b = make_pair(regime, seed, dtype)
    out = nao_interpolate(a, b, T50.to(dtype))
    assert out.dtype == dtype and out.shape == (*a.shape[:-1], 50, a.shape[-1])
    assert torch.equal(out[..., 0, :], a) and torch.equal(out[..., -1, :], b)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("regime", REGIMES + ["same_ray"])
def test_no_tunnelling(regime, seed, dtype):
    a, b = make_pair(regime, seed, dtype)
    p = ChiPrior(a.shape[-1])
    r = nao_interpolate(a, b, T50).double().norm(dim=-1)[..., 1:-1]
    ra, rb = a.double().norm(dim=-1)[..., None], b.double().norm(dim=-1)[..., None]
    lo = torch.minimum(torch.minimum(ra, rb), torch.tensor(p.mode)) - 0.5 * p.std
    hi = torch.maximum(torch.maximum(ra, rb), torch.tensor(p.mode)) + 0.5 * p.std
    assert (r >= lo).all() and (r <= hi).all()


@pytest.mark.parametrize("regime", REGIMES)
def test_energy_below_baselines_and_converged(regime, seed, dtype):
    a, b = make_pair(regime, seed, dtype)
    e = path_energy(nao_interpolate(a, b, T50).double())
    slack = 1 + TOL[dtype]["rtol"]
    for f in (lerp, slerp):
        assert (e <= path_energy(f(a, b, T50).double()) * slack).all(), f.__name__
    fine = path_energy(nao_interpolate(a, b, T50, n_nodes=8 * 64).double())
    assert ((e - fine) / e < 1e-3).all()


@pytest.mark.parametrize("regime", ["typical", "atypical"])
def test_energy_below_paper_solver(regime):
    a, b = make_pair(regime, 0, torch.float32, d=128)
    e = path_energy(nao_interpolate(a, b, T50).double())
    ep = path_energy(paper_interpolate(a, b, max_steps=300).double())
    assert e <= ep * (1 + 1e-6)


def test_rotation_equivariance(seed):
    a, b = make_pair("typical", seed, torch.float64, d=32)
    q, _ = torch.linalg.qr(torch.randn(32, 32, generator=torch.Generator().manual_seed(seed + 10), dtype=torch.float64))
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    torch.testing.assert_close(nao_interpolate(a @ q.T, b @ q.T, t), nao_interpolate(a, b, t) @ q.T)
    s = torch.stack([a, b, a + b])
    torch.testing.assert_close(nao_centroid(s @ q.T), nao_centroid(s) @ q.T, rtol=1e-6, atol=1e-6)


def test_batched_equals_looped(dtype):
    a, b = make_pair("batched", 0, dtype)
    t = torch.linspace(0, 1, 8, dtype=dtype)
    batched = nao_interpolate(a, b, t)
    looped = torch.stack([nao_interpolate(a[i], b[i], t) for i in range(len(a))])
    torch.testing.assert_close(batched, looped, **TOL[dtype])
    torch.testing.assert_close(nao_interpolate(a[:1], b, t), torch.stack([nao_interpolate(a[0], bi, t) for bi in b]),
                               **TOL[dtype])


def test_deterministic():
    a, b = make_pair("typical", 0, torch.float32)
    assert torch.equal(nao_interpolate(a, b, T50), nao_interpolate(a, b, T50))


def test_degenerate_inputs():
    a, _ = make_pair("typical", 0, torch.float32)
    out = nao_interpolate(a, a, T50)
    assert torch.equal(out, a.expand(50, -1))
    with pytest.raises(ValueError, match="a"):
        nao_interpolate(torch.zeros_like(a), a, T50)
    with pytest.raises(ValueError, match="non-finite"):
        nao_interpolate(a, torch.full_like(a, float("nan")), T50)
    with pytest.raises(ValueError, match=r"\(256,\).*\(255,\)"):
        nao_interpolate(a, a[:-1], T50)
    with pytest.raises(ValueError, match="t"):
        nao_interpolate(a, a, torch.tensor([0.0, 2.0]))
    # exactly antipodal: a deterministic plane, still exact and no tunnelling
    out = nao_interpolate(a, -a, T50)
    assert torch.equal(out, nao_interpolate(a, -a, T50)) and torch.equal(out[-1], -a)


def test_centroid_energy_ordering(seed):
    g = torch.Generator().manual_seed(seed)
    d, K = 256, 5
    p = ChiPrior(d)
    s = torch.randn(K, d, generator=g, dtype=torch.float64)
    s = s / s.norm(dim=-1, keepdim=True) * p.mode * torch.linspace(0.9, 1.1, K, dtype=torch.float64)[:, None]
    c = nao_centroid(s)
    e = centroid_energy(s, c)
    for f in (normalized_centroid, cog_centroid, mean_centroid):
        assert e <= centroid_energy(s, f(s)) * (1 + 1e-12), f.__name__
    if seed == 0:
        assert e <= centroid_energy(s, paper_centroid(s, max_steps=200))


def test_centroid_k1_and_paths():
    s = make_pair("typical", 0, torch.float32)[0][None]
    c = nao_centroid(s)
    assert c.shape == (256,) and torch.isfinite(c).all()
    s3 = torch.stack(make_pair("typical", 1, torch.float32) + make_pair("typical", 2, torch.float32)[:1])
    t = torch.linspace(0, 1, 4)
    c, paths = nao_centroid_paths(s3, t)
    assert paths.shape == (3, 4, 256)
    assert torch.equal(paths[:, 0], c.expand(3, -1)) and torch.equal(paths[:, -1], s3)


def test_geodesic_energy_below_polyline():
    a, b = make_pair("atypical", 0, torch.float64)
    assert geodesic_energy(a, b) <= path_energy(nao_interpolate(a, b, T50)) * (1 + 1e-3)


def test_exactly_antipodal_no_tunnelling_and_below_lerp():
    a, _ = make_pair("typical", 0, torch.float64)
    p = ChiPrior(a.shape[-1])
    path = nao_interpolate(a, -a, T50)
    r = path.norm(dim=-1)
    assert (r >= torch.clamp(a.norm(), max=p.mode) - 0.5 * p.std).all()
    assert (r <= torch.clamp(a.norm(), min=p.mode) + 0.5 * p.std).all()
    assert path_energy(path) < path_energy(slerp(a, -a * (1 + 1e-9), T50))


def test_solver_boundary_derivatives_match_finite_differences():
    """∂D/∂r_b and ∂D/∂θ returned by the planar solver (used by the centroid's envelope
    gradient) agree with central differences of the re-solved energy."""
    p = ChiPrior(256)
    ra = torch.tensor([0.9, 1.05], dtype=torch.float64) * p.mode
    rb = torch.tensor([1.02, 0.97], dtype=torch.float64) * p.mode
    th = torch.tensor([1.1, 0.4], dtype=torch.float64)
    _, _, _, d_rb, d_th = planar.solve_planar(ra, rb, th, p)
    h = 1e-5
    e = lambda ra_, rb_, th_: planar.solve_planar(ra_, rb_, th_, p)[2]
    torch.testing.assert_close(d_rb, (e(ra, rb + h, th) - e(ra, rb - h, th)) / (2 * h), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(d_th, (e(ra, rb, th + h) - e(ra, rb, th - h)) / (2 * h), rtol=1e-5, atol=1e-6)


def test_centroid_paths_consistent_with_interpolation():
    g = torch.Generator().manual_seed(5)
    s = torch.randn(3, 64, generator=g, dtype=torch.float64)
    t = torch.linspace(0, 1, 5, dtype=torch.float64)
    c, paths = nao_centroid_paths(s, t)
    torch.testing.assert_close(c, nao_centroid(s))
    torch.testing.assert_close(paths, nao_interpolate(c.expand(3, -1), s, t))


def test_paper_gradient_matches_autograd():
    """The paper solver's closed-form gradient equals autograd of its objective (penalty both
    active and inactive; naive and exact w)."""
    from normguide.geometry.paper import _midpoint_objective_and_grad, _w_and_derivative

    p = ChiPrior(64)
    x = torch.randn(2, 6, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64).requires_grad_(True)
    eps_len = torch.tensor([0.5, 100.0], dtype=torch.float64)
    for naive in (True, False):
        w_dw = _w_and_derivative(p, 64, torch.float64, naive)
        obj, grad = _midpoint_objective_and_grad(x.detach().clone(), w_dw, eps_len, 1.0)
        seg = x[..., 1:, :] - x[..., :-1, :]
        mu = ((x[..., 1:, :] + x[..., :-1, :]) / 2).norm(dim=-1)
        w = -p.log_prob(mu) if not naive else w_dw(mu)[0]
        ref = (seg.norm(dim=-1) * w).sum(-1) + torch.relu(seg.norm(dim=-1) - eps_len[:, None]).sum(-1)
        (ref_grad,) = torch.autograd.grad(ref.sum(), x)
        torch.testing.assert_close(obj, ref.detach())
        torch.testing.assert_close(grad, ref_grad)
    # the naive float32 w is the same function as the exact one up to float32 rounding
    r = torch.linspace(0.9, 1.1, 101) * ChiPrior(16384).mode
    naive32 = _w_and_derivative(ChiPrior(16384), 16384, torch.float32, True)(r)[0]
    assert (naive32.double() + ChiPrior(16384).log_prob(r.double())).abs().max() < 0.02
