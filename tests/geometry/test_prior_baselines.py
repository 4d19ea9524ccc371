import math

import numpy as np
import pytest
import torch
from scipy import stats

from normguide.geometry import ChiPrior, cog, cog_centroid, lerp, mean_centroid, normalized_centroid, slerp


@pytest.mark.parametrize("d", [2, 3, 64, 16384, 4 * 128 * 128])
def test_log_prob_matches_scipy_chi(d):
    p = ChiPrior(d)
    r = torch.tensor([0.5, 0.9, 1.0, 1.001, 1.1, 1.5], dtype=torch.float64) * p.mode
    ref = stats.chi(d).logpdf(r.numpy())
    np.testing.assert_allclose(p.log_prob(r).numpy(), ref, rtol=1e-9, atol=1e-9 * max(1.0, d / 100))
    assert p.log_prob(torch.tensor(0.0)).item() == -math.inf


def test_moments_and_zscore():
    p = ChiPrior(16384)
    assert p.mode == pytest.approx(127.996, abs=1e-3)
    assert p.mean == pytest.approx(stats.chi(16384).mean(), rel=1e-9)
    assert p.std == pytest.approx(0.7071, abs=1e-4)
    x = torch.randn(1000, 16384, generator=torch.Generator().manual_seed(0))
    z = p.zscore(x)
    assert abs(z.mean().item()) < 0.15 and abs(z.std().item() - 1) < 0.1
    assert z.dtype == torch.float32


def test_prior_rejects_bad_d():
    with pytest.raises(ValueError, match="d"):
        ChiPrior(1)


def test_cog_formula(seed):
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(2, 64, generator=g, dtype=torch.float64)
    t = torch.linspace(0, 1, 7, dtype=torch.float64)
    for i, ti in enumerate(t):
        w = torch.stack([1 - ti, ti])
        ref = (w[0] * a + w[1] * b) / torch.sqrt((w**2).sum())
        torch.testing.assert_close(cog(a, b, t)[i], ref)
    s = torch.randn(5, 64, generator=g, dtype=torch.float64)
    torch.testing.assert_close(cog_centroid(s), s.sum(0) / math.sqrt(5))


def test_baseline_endpoints_and_shapes(dtype):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 3, 32, generator=g).to(dtype)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=dtype)
    for f in (lerp, slerp, cog):
        out = f(a, b, t)
        assert out.shape == (3, 3, 32) and out.dtype == dtype
        torch.testing.assert_close(out[:, 0], a)
        torch.testing.assert_close(out[:, -1], b)
    ua, ub = a / a.norm(dim=-1, keepdim=True), b / b.norm(dim=-1, keepdim=True)
    mid = slerp(ua, ub, torch.tensor([0.5], dtype=dtype))[:, 0]
    torch.testing.assert_close(mid.norm(dim=-1), torch.ones(3, dtype=dtype))


def test_centroid_baselines():
    p = ChiPrior(64)
    s = torch.randn(4, 5, 64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(mean_centroid(s), s.mean(-2))
    torch.testing.assert_close(normalized_centroid(s).norm(dim=-1), torch.full((4,), p.mode))
