"""Every floating dtype: outputs within 0.05 std of the float64 solution cast to the output
dtype (the solvers run in float64 and the d-dimensional lift in float32 or float64, cast once)."""

import pytest
import torch

from normguide.geometry import ChiPrior, nao_centroid, nao_centroid_paths, nao_interpolate, path_energy

from .conftest import make_pair

DTYPES = [torch.bfloat16, torch.float16, torch.float32]
T50 = torch.linspace(0, 1, 50)


def _norm_gap_std(out, ref64, prior):
    """Largest |‖out‖ − ‖ref64 cast to out's dtype‖| over points, in units of the prior's std.
    (The cast alone moves norms by up to ~0.06 std in bfloat16 at d = 16384.)"""
    cast = ref64.to(out.dtype).double()
    return float((out.double().norm(dim=-1) - cast.norm(dim=-1)).abs().max() / prior.std)


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "f16", "f32"])
@pytest.mark.parametrize("regime", ["typical", "atypical", "antipodal", "near"])
@pytest.mark.parametrize("d", [256, 16384])
def test_interpolation_matches_float64_solution(dtype, regime, d):
    a, b = make_pair(regime, 0, torch.float64, d=d)
    a, b = a.to(dtype), b.to(dtype)  # the inputs as the caller holds them
    p = ChiPrior(d)
    out = nao_interpolate(a, b, T50)
    ref = nao_interpolate(a.double(), b.double(), T50)
    assert out.dtype == dtype
    assert _norm_gap_std(out, ref, p) < 0.05
    # positions: no further from the float64 solution than its own cast is (plus rounding slack)
    err = (out.double() - ref).norm(dim=-1)
    cast_err = (ref.to(dtype).double() - ref).norm(dim=-1)
    assert (err <= 1.5 * cast_err + 1e-6 * ref.norm(dim=-1)).all()
    e, e_ref = path_energy(out.double()), path_energy(ref.to(dtype).double())
    assert abs(float(e - e_ref)) <= 0.01 * float(e_ref)


@pytest.mark.parametrize("dtype", DTYPES, ids=["bf16", "f16", "f32"])
@pytest.mark.parametrize("K", [1, 2, 5])
def test_centroid_matches_float64_solution(dtype, K):
    d = 4096
    p = ChiPrior(d)
    g = torch.Generator().manual_seed(K)
    s = torch.randn(K, d, generator=g, dtype=torch.float64)
    s = (s / s.norm(dim=-1, keepdim=True) * p.mode * torch.linspace(0.85, 1.1, K, dtype=torch.float64)[:, None])
    s = s.to(dtype)
    c = nao_centroid(s)
    ref = nao_centroid(s.double())
    assert c.dtype == dtype
    assert _norm_gap_std(c[None], ref[None], p) < 0.05
    assert (c.double() - ref).norm() <= 1.5 * (ref.to(dtype).double() - ref).norm() + 1e-6 * ref.norm()
    c2, paths = nao_centroid_paths(s, torch.linspace(0, 1, 5))
    assert c2.dtype == paths.dtype == dtype and torch.equal(c2, c)
