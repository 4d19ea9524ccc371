"""NAO centroids: every K (1, 2, many, K > d), tiny d, identical seeds, batching, the joint
Newton's derivatives. (Speed is shown by benchmarks/nao_solvers.py, never by timed tests.)"""


import pytest
import torch

from normguide.geometry import (
    ChiPrior,
    centroid_energy,
    cog_centroid,
    geodesic_energy,
    mean_centroid,
    nao_centroid,
    nao_centroid_paths,
    normalized_centroid,
)
from normguide.geometry import centroid as C
from normguide.geometry.planar import chord_constants, chord_energy, w_of

D = 256


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def seeds_at(norms, d=D, seed=0):
    """Independent random directions with the given norms (float64)."""
    g = torch.Generator().manual_seed(seed)
    norms = torch.as_tensor(norms, dtype=torch.float64)
    return unit(torch.randn(len(norms), d, generator=g, dtype=torch.float64)) * norms[:, None]


def ray_objective(r_seeds, rho, prior):
    """F(ρ·ŝ) for seeds on one ray: Σ_k |∫_{r_k}^ρ w| + w(ρ), by dense trapezoid quadrature."""
    out = []
    for x in rho.tolist():
        total = -float(prior.log_prob(torch.tensor(x, dtype=torch.float64)))
        for r in r_seeds.tolist():
            grid = torch.linspace(min(r, x), max(r, x), 4001, dtype=torch.float64)
            total += float(torch.trapezoid(-prior.log_prob(grid), grid))
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


# ------------------------------------------------------------------------------------- K = 1


@pytest.mark.parametrize("factor", [0.5, 0.8, 1.15, 1.5])
def test_k1_atypical_seed_is_its_own_centroid(factor):
    """Far from the shell, moving c towards the mode costs ∫w more than it saves in w(|c|)."""
    p = ChiPrior(D)
    s = seeds_at([factor * p.mode])
    assert torch.equal(nao_centroid(s), s[0])
    s32 = s.float()
    assert torch.equal(nao_centroid(s32), s32[0])


@pytest.mark.parametrize("offset", [-1.0, -0.6, 0.6, 1.0])
def test_k1_moderately_atypical_seed_moves_along_its_ray_to_the_1d_optimum(offset):
    """|w'| > w near the shell: the minimiser is on the seed's ray between the seed and the mode;
    brute force over the ray agrees."""
    p = ChiPrior(D)
    s = seeds_at([p.mode + offset])
    c = nao_centroid(s)
    assert torch.allclose(unit(c), unit(s[0]), atol=1e-12)
    r_c = float(c.norm())
    assert min(p.mode, float(s.norm())) <= r_c <= max(p.mode, float(s.norm()))
    grid = torch.linspace(p.mode - 2, p.mode + 2, 801, dtype=torch.float64)
    F_grid = ray_objective(s.norm(dim=-1), grid, p)
    F_c = ray_objective(s.norm(dim=-1), torch.tensor([r_c], dtype=torch.float64), p)
    assert F_c <= F_grid.min() + 1e-6
    assert F_c < ray_objective(s.norm(dim=-1), s.norm(dim=-1), p)  # strictly better than the seed


@pytest.mark.parametrize("K", [2, 3, 7])
@pytest.mark.parametrize("factor", [0.8, 1.0])
def test_identical_seeds(K, factor):
    """K copies of one seed: the 1-D problem with multiplicity K. Atypical: the seed itself;
    at the shell's edge: on its ray, at the brute-force optimum of K·|∫w| + w."""
    p = ChiPrior(D)
    r = factor * p.mode if factor != 1.0 else p.mode - 0.4
    s = seeds_at([r]).expand(K, -1)
    c = nao_centroid(s)
    if factor != 1.0:
        assert torch.equal(c, s[0])
    assert torch.allclose(unit(c), unit(s[0]), atol=1e-12)
    grid = torch.linspace(p.mode - 1, p.mode + 1, 401, dtype=torch.float64)
    F = ray_objective(s.norm(dim=-1), grid, p)
    assert ray_objective(s.norm(dim=-1), c.norm()[None], p) <= F.min() + 1e-6


# ------------------------------------------------------------------------------------- K = 2


@pytest.mark.parametrize("norms", [(1.0, 1.0), (0.8, 1.15), (0.76, 0.78), (0.95, 1.05)])
def test_k2_on_the_shell_attains_the_lower_bound_and_is_symmetric(norms, seed):
    """F(c) ≥ D(s1, s2) + w(mode) for every c (triangle inequality); the K = 2 centroid attains
    it up to the geodesics' discretisation, lies at the mode's norm, and does not depend on the
    order of the seeds."""
    p = ChiPrior(D)
    s = seeds_at([n * p.mode for n in norms], seed=seed)
    c = nao_centroid(s)
    bound = geodesic_energy(s[0], s[1]) - p.log_prob(torch.tensor(p.mode, dtype=torch.float64))
    F = centroid_energy(s, c)
    assert F <= bound * (1 + 1e-4)
    assert abs(float(p.zscore(c))) < 0.1
    torch.testing.assert_close(nao_centroid(s.flip(0)), c, rtol=1e-7, atol=1e-7)
    for f in (normalized_centroid, cog_centroid, mean_centroid):
        assert F <= centroid_energy(s, f(s)) * (1 + 1e-12), f.__name__


def test_k2_close_seeds_far_inside_leave_the_geodesic():
    """Two nearby seeds deep inside the shell: the geodesic never reaches the shell, the lower
    bound is not attained, and the minimiser moves off the geodesic towards the mode; no
    perturbation lowers F."""
    p = ChiPrior(D)
    g = torch.Generator().manual_seed(3)
    a = torch.randn(D, generator=g, dtype=torch.float64)
    s = unit(torch.stack([a, a + 0.05 * torch.randn(D, generator=g, dtype=torch.float64)])) * 0.76 * p.mode
    c = nao_centroid(s)
    F = centroid_energy(s, c)
    _, Q = torch.linalg.eigh(s @ s.T)
    basis = unit(Q.T @ s)  # orthonormal basis of span(s)
    for e in basis:
        for h in (1e-3, -1e-3, 1e-2, -1e-2):
            assert F <= centroid_energy(s, c + h * e) * (1 + 1e-10)


@pytest.mark.parametrize("norms", [(1.0, 1.0), (0.8, 1.1)])
def test_seeds_on_a_line_through_the_origin(norms):
    """s and −λs: their span is a line, but the minimisers lie off it, on the circle around it at
    the mode (the lower bound D(s1, s2) + w(mode) is attained there)."""
    p = ChiPrior(D)
    s = seeds_at([p.mode])
    S = torch.cat([norms[0] * s, -norms[1] * s])
    c = nao_centroid(S)
    assert abs(float(p.zscore(c))) < 0.1
    assert abs(float(unit(c) @ unit(s[0]))) < 0.1
    bound = geodesic_energy(S[0], S[1]) - p.log_prob(torch.tensor(p.mode, dtype=torch.float64))
    assert centroid_energy(S, c) <= bound * (1 + 1e-4)
    S3 = torch.cat([s, -s, -1.05 * s])
    c3 = nao_centroid(S3)
    assert torch.isfinite(c3).all()
    for f in (normalized_centroid, cog_centroid):
        assert centroid_energy(S3, c3) <= centroid_energy(S3, f(S3)) * (1 + 1e-9)


# ------------------------------------------------------------------------------- general K


@pytest.mark.parametrize("K", [3, 5, 12])
def test_no_perturbation_lowers_the_objective(K, seed):
    p = ChiPrior(64)
    s = seeds_at(p.mode * (0.8 + 0.4 * torch.rand(K, generator=torch.Generator().manual_seed(seed))), d=64,
                 seed=seed)
    c = nao_centroid(s)
    F = centroid_energy(s, c)
    g = torch.Generator().manual_seed(100 + seed)
    for _ in range(6):
        e = unit(torch.randn(64, generator=g, dtype=torch.float64))
        for h in (1e-2, -1e-2, 1e-1):
            assert F <= centroid_energy(s, c + h * e) * (1 + 1e-10)
    for f in (normalized_centroid, cog_centroid, mean_centroid):
        assert F <= centroid_energy(s, f(s)) * (1 + 1e-12), f.__name__


@pytest.mark.parametrize("d,K", [(2, 3), (2, 6), (4, 5), (4, 12), (3, 4)])
def test_k_greater_than_d(d, K):
    """K > d: the seeds span all of R^d. The centroid is finite, beats the baselines, and a
    grid around it in R^d finds nothing lower."""
    g = torch.Generator().manual_seed(d * 100 + K)
    s = torch.randn(K, d, generator=g, dtype=torch.float64)
    c = nao_centroid(s)
    assert c.shape == (d,) and torch.isfinite(c).all()
    F = centroid_energy(s, c)
    for f in (normalized_centroid, cog_centroid, mean_centroid):
        assert F <= centroid_energy(s, f(s)) * (1 + 1e-9), f.__name__
    steps = torch.tensor([-0.05, -0.01, 0.01, 0.05], dtype=torch.float64)
    for i in range(d):
        for h in steps:
            e = torch.zeros(d, dtype=torch.float64)
            e[i] = h
            assert F <= centroid_energy(s, c + e) * (1 + 1e-6)
    _, paths = nao_centroid_paths(s.float(), torch.linspace(0, 1, 5))
    assert paths.shape == (K, 5, d) and torch.isfinite(paths).all()


@pytest.mark.parametrize("d", [2, 4])
def test_tiny_d_pairs(d, seed):
    """d = 2 and 4, K = 2: finite, never worse than the baselines, fast enough to loop over."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(5):
        s = torch.randn(2, d, generator=g, dtype=torch.float64)
        c = nao_centroid(s)
        F = centroid_energy(s, c)
        assert torch.isfinite(c).all()
        for f in (normalized_centroid, cog_centroid, mean_centroid):
            assert F <= centroid_energy(s, f(s)) * (1 + 1e-9), f.__name__


def test_seeds_on_one_ray_with_different_norms():
    p = ChiPrior(D)
    s = seeds_at([0.9 * p.mode])
    S = torch.cat([s, s * 1.1, s * 1.2])
    c = nao_centroid(S)
    assert torch.allclose(unit(c), unit(s[0]), atol=1e-12)
    grid = torch.linspace(0.85 * p.mode, 1.25 * p.mode, 801, dtype=torch.float64)
    assert ray_objective(S.norm(dim=-1), c.norm()[None], p) <= ray_objective(S.norm(dim=-1), grid, p).min() + 1e-6


def test_batched_centroids_equal_looped():
    """(B, K, d): concepts solved together, whatever route each takes (here: ordinary seeds,
    identical seeds, seeds nearly on one ray)."""
    p = ChiPrior(D)
    a = seeds_at([p.mode, 0.9 * p.mode, 1.1 * p.mode], seed=1)
    b = seeds_at([0.8 * p.mode]).expand(3, -1)
    c = seeds_at([p.mode - 0.4]).expand(3, -1) * torch.tensor([[1.0], [1.0], [1.0 + 1e-3]], dtype=torch.float64)
    batch = torch.stack([a, b, c, a.flip(0)])
    out = nao_centroid(batch)
    looped = torch.stack([nao_centroid(x) for x in batch])
    torch.testing.assert_close(out, looped, rtol=1e-7, atol=1e-7)
    two = torch.stack([seeds_at([p.mode, 1.1 * p.mode], seed=i) for i in range(3)])
    torch.testing.assert_close(nao_centroid(two), torch.stack([nao_centroid(x) for x in two]), rtol=1e-7, atol=1e-7)


def test_rank_deficient_span():
    """Three seeds in a 2-D plane of R^256: the third coordinate is a null direction."""
    p = ChiPrior(D)
    a, b = seeds_at([p.mode, p.mode], seed=4)
    s = torch.stack([a, b, unit(a + b) * p.mode * 1.02])
    c = nao_centroid(s)
    F = centroid_energy(s, c)
    for f in (normalized_centroid, cog_centroid):
        assert F <= centroid_energy(s, f(s)) * (1 + 1e-12)
    Q, _ = torch.linalg.qr(torch.stack([a, b]).T)
    assert (c - Q @ (Q.T @ c)).norm() < 1e-9 * c.norm()  # in the span


def test_centroid_rejects_bad_input():
    with pytest.raises(ValueError, match="K ≥ 1"):
        nao_centroid(torch.zeros(0, 8))
    with pytest.raises(ValueError, match="d ≥ 2"):
        nao_centroid(torch.ones(3, 1))
    with pytest.raises(ValueError, match="non-zero"):
        nao_centroid(torch.zeros(2, 8))


# ------------------------------------------------------------------------ joint Newton internals


def test_joint_newton_step_matches_autograd_hessian():
    """The Schur-complement step of the joint Newton equals −H⁻¹g of the autograd Hessian of
    F(y, R) = Σ_k E_k(R_k; |y|, θ_k(y)) + w(|y|) over (y, interior radii)."""
    p = ChiPrior(16)
    N = 8
    s = seeds_at([0.9 * p.mode, 1.0 * p.mode, 1.1 * p.mode], d=16, seed=2)
    Y, _, _ = C.span_coordinates(s[None])
    rs = Y.norm(dim=-1)
    U = Y / rs[..., None]
    y = p.mode * unit(Y[0].mean(0))[None] + 0.05  # near the optimum, not at it
    R, _ = C._initial_radii(y, U, rs, p, N)
    K = 3
    x0 = torch.cat([y.reshape(-1), R[0, :, 1:-1].reshape(-1)]).requires_grad_(True)

    def F_of(x):
        yy = x[:3][None]
        RR = torch.cat([R[0, :, :1], x[3:].reshape(K, N - 1), R[0, :, -1:]], -1)[None]
        return C._joint_energy(yy, RR, U, p, N)[0]

    H = torch.autograd.functional.hessian(F_of, x0.detach())
    g = torch.autograd.grad(F_of(x0), x0)[0]
    assert bool((torch.linalg.eigvalsh(H) > 0).all())  # no damping at this point
    step = -torch.linalg.solve(H, g)
    F, slope, dy, dR = C._joint_step(y, R, U, torch.zeros(1, 3, dtype=torch.bool), p, N)
    torch.testing.assert_close(F, F_of(x0.detach())[None])
    torch.testing.assert_close(dy[0], step[:3], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(dR[0].reshape(-1), step[3:], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(slope, (g * step).sum()[None], rtol=1e-6, atol=1e-10)


def test_chord_energy_is_the_planar_polyline_energy():
    from normguide.geometry.planar import grid, planar_energy

    p = ChiPrior(64)
    r = p.mode * (1 + 0.1 * torch.rand(2, 9, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    theta = torch.tensor([0.3, 2.0], dtype=torch.float64)
    c, _, _ = chord_constants(theta, 8)
    phi = theta[:, None] * grid(8, None)
    torch.testing.assert_close(chord_energy(r, c, w_of(p)), planar_energy(r, phi, w_of(p)))
