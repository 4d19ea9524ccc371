"""FittedNormPrior and the NormPrior protocol: the fitted prior's density and derivatives, its
fit from 1-5 norms, and NAO paths and centroids under it (issue 9)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats

from normguide.geometry import (
    ChiPrior,
    FittedNormPrior,
    NormPrior,
    geodesic_energy,
    nao_centroid,
    nao_interpolate,
    path_energy,
    slerp,
)

D = 256


def unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def inversion_like(K, d=D, seed=0, z=-5.4, spread=0.85):
    """Seeds with the demo model's inversion norms (QUALITY.md: 12.18 ± 0.85 at d = 256)."""
    g = torch.Generator().manual_seed(seed)
    chi = ChiPrior(d)
    norms = chi.mean + z * chi.std + spread * torch.randn(K, generator=g, dtype=torch.float64)
    return unit(torch.randn(K, d, generator=g, dtype=torch.float64)) * norms[:, None]


def test_both_priors_implement_the_protocol():
    assert isinstance(ChiPrior(D), NormPrior)
    assert isinstance(FittedNormPrior(12.0, 0.8, d=D), NormPrior)


def test_log_prob_is_the_truncated_normal_density():
    p = FittedNormPrior(3.0, 1.2, d=D)
    r = np.array([0.1, 1.0, 2.5, 3.0, 4.0, 7.0])
    ref = stats.truncnorm(-3.0 / 1.2, np.inf, loc=3.0, scale=1.2)
    np.testing.assert_allclose(p.log_prob(torch.tensor(r, dtype=torch.float64)).numpy(), ref.logpdf(r), rtol=1e-12)
    assert p.mean == pytest.approx(ref.mean(), rel=1e-12) and p.std == pytest.approx(ref.std(), rel=1e-12)
    assert p.log_prob(torch.tensor(0.0)).item() == -math.inf and p.log_prob(torch.tensor(-1.0)).item() == -math.inf
    assert p.log_prob(torch.tensor([2.0], dtype=torch.float32)).dtype == torch.float32


def test_derivatives_match_autograd():
    for p in (FittedNormPrior(12.2, 0.85, d=D), ChiPrior(D)):
        r = torch.linspace(8, 20, 13, dtype=torch.float64).requires_grad_(True)
        w = -p.log_prob(r)
        (w1,) = torch.autograd.grad(w.sum(), r, create_graph=True)
        (w2,) = torch.autograd.grad(w1.sum(), r)
        ww, ww1, ww2 = p.neg_log_prob_derivatives(r.detach())
        torch.testing.assert_close(ww, w.detach())
        torch.testing.assert_close(ww1, w1.detach())
        torch.testing.assert_close(ww2, w2)
        torch.testing.assert_close(p.neg_log_prob64(r.detach()), w.detach())


@pytest.mark.parametrize("K", [1, 2, 3, 5])
def test_fit_from_few_norms(K):
    seeds = inversion_like(K)
    norms = seeds.norm(dim=-1)
    p = FittedNormPrior.fit(norms, d=D)
    chi = ChiPrior(D)
    assert p.mode == pytest.approx(float(norms.mean()))
    floor = max(chi.std * p.mode / chi.mean, 0.5)
    assert p.scale >= floor - 1e-12
    if K == 1:
        assert p.scale == pytest.approx(floor)
    else:
        assert p.scale == pytest.approx(max(float(norms.std()), floor))
    assert float(-p.log_prob(torch.tensor(p.mode, dtype=torch.float64))) > 0  # a positive metric
    assert abs(float(p.zscore(seeds).mean())) < 1.5
    assert FittedNormPrior.fit(norms.tolist(), d=D, min_std=3.0).scale == 3.0


def test_fit_rejects_bad_input():
    with pytest.raises(ValueError, match="norms"):
        FittedNormPrior.fit([], d=D)
    with pytest.raises(ValueError, match="norms"):
        FittedNormPrior.fit([1.0, -2.0], d=D)
    with pytest.raises(ValueError, match="min_std"):
        FittedNormPrior.fit([12.0], d=D, min_std=-1.0)
    with pytest.raises(ValueError, match="w = −log p"):
        FittedNormPrior.fit([12.0], d=D, min_std=0.3)  # density above 1 at the mode
    with pytest.raises(ValueError, match="d must"):
        FittedNormPrior(12.0, 1.0, d=0)


def test_solvers_accept_any_protocol_prior_and_reject_others():
    class Tabled:
        """A user's own prior: a Gaussian on r written out by hand."""

        mode, mean, std = 12.0, 12.0, 1.0

        def log_prob(self, r):
            return -self.neg_log_prob64(torch.as_tensor(r, dtype=torch.float64))

        def neg_log_prob64(self, r):
            return 0.5 * (r - 12.0) ** 2 + 0.5 * math.log(2 * math.pi)

        def neg_log_prob_derivatives(self, r):
            return self.neg_log_prob64(r), r - 12.0, torch.ones_like(r)

        def zscore(self, x):
            return (x.norm(dim=-1) - 12.0) / 1.0

    a, b = inversion_like(2)
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    assert torch.isfinite(nao_interpolate(a, b, t, prior=Tabled())).all()
    same = FittedNormPrior(12.0, 1.0, d=D)
    torch.testing.assert_close(nao_interpolate(a, b, t, prior=Tabled()), nao_interpolate(a, b, t, prior=same),
                               rtol=1e-6, atol=1e-6)

    class NoDerivatives:
        mode, mean, std = 12.0, 12.0, 1.0

        def log_prob(self, r):
            return -0.5 * (torch.as_tensor(r) - 12.0) ** 2

    with pytest.raises(ValueError, match="NormPrior.*neg_log_prob64"):
        nao_interpolate(a, b, t, prior=NoDerivatives())
    with pytest.raises(ValueError, match="NormPrior"):
        nao_centroid(torch.stack([a, b]), prior=NoDerivatives())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paths_stay_near_the_fitted_mode(seed):
    """Under the fitted prior, NAO paths between inversion-like seeds keep their interior norms
    at the fitted shell (no tunnelling w.r.t. that prior), where under the chi prior they climb
    to the chi shell, 5 chi std above."""
    seeds = inversion_like(5, seed=seed)
    p = FittedNormPrior.fit(seeds.norm(dim=-1), d=D)
    chi = ChiPrior(D)
    a, b = seeds[0], seeds[1]
    t = torch.linspace(0, 1, 50, dtype=torch.float64)
    path = nao_interpolate(a, b, t, prior=p)
    r = path.norm(dim=-1)[1:-1]
    ra, rb = float(a.norm()), float(b.norm())
    assert (r >= min(ra, rb, p.mode) - 0.5 * p.std).all() and (r <= max(ra, rb, p.mode) + 0.5 * p.std).all()
    assert abs(float(p.zscore(path[25]))) < 0.5
    assert float(chi.zscore(nao_interpolate(a, b, t)[25])) > -0.5  # the chi prior pulls it up
    assert path_energy(path, prior=p) <= path_energy(slerp(a, b, t), prior=p) * (1 + 1e-9)
    c = nao_centroid(seeds, prior=p)
    assert abs(float(p.zscore(c))) < 0.5
    assert float(chi.zscore(c)) < -3


def test_fitted_prior_reduces_to_the_chi_prior_on_gaussian_seeds():
    """Fitted to N(0, I) seeds, the prior sits on the chi shell with the chi width, and NAO paths
    under it match those under ChiPrior to a fraction of a std."""
    g = torch.Generator().manual_seed(0)
    seeds = torch.randn(5, D, generator=g, dtype=torch.float64)
    p = FittedNormPrior.fit(seeds.norm(dim=-1), d=D)
    chi = ChiPrior(D)
    assert abs(p.mode - chi.mode) < 1.5 * chi.std
    assert chi.std * 0.9 <= p.scale <= 2 * chi.std
    t = torch.linspace(0, 1, 20, dtype=torch.float64)
    r_fit = nao_interpolate(seeds[0], seeds[1], t, prior=p).norm(dim=-1)
    r_chi = nao_interpolate(seeds[0], seeds[1], t).norm(dim=-1)
    assert (r_fit - r_chi).abs().max() < 1.5 * chi.std
    e_fit = geodesic_energy(seeds[0], seeds[1], prior=p)
    assert torch.isfinite(e_fit) and e_fit > 0


def test_single_norm_fit_makes_that_seed_its_own_centroid():
    s = inversion_like(1)
    p = FittedNormPrior.fit(s.norm(dim=-1), d=D)
    assert torch.equal(nao_centroid(s, prior=p), s[0])
