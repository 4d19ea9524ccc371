"""Diff-II's circle interpolation and the norm-keeping centroid: their defining properties, and
their place in the seed-method registry (deterministic from the run seed)."""

from __future__ import annotations

import math

import pytest
import torch

from normguide import geometry as geo
from normguide.data.plan import SEED_METHODS, circle_angles, plan_seeds, spread_pairs

D = 256


def _unit(x):
    return x / x.norm(dim=-1, keepdim=True)


def _in_plane(points, a, b):
    """Residual of each point outside span(a, b), relative to its norm."""
    q, _ = torch.linalg.qr(torch.stack([a, b], dim=1).double())  # (d, 2)
    p = points.double()
    return ((p - (p @ q) @ q.T).norm(dim=-1) / p.norm(dim=-1)).max().item()


def test_circle_points_lie_on_the_great_circle_of_the_two_inversions():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(D, generator=g, dtype=torch.float64)
    b = torch.randn(D, generator=g, dtype=torch.float64)
    b = b / b.norm() * a.norm()  # equal norms: Diff-II's curve is a great circle at that norm
    phi = torch.linspace(0, 2 * math.pi, 33, dtype=torch.float64)
    pts = geo.circle_interpolate(a, b, phi)
    assert _in_plane(pts, a, b) < 1e-12
    assert torch.allclose(pts.norm(dim=-1), a.norm().expand(33), rtol=1e-12)
    theta = torch.arccos((_unit(a) @ _unit(b)).clamp(-1, 1))
    ends = geo.circle_interpolate(a, b, torch.stack([torch.tensor(0.0, dtype=torch.float64), theta]))
    assert torch.allclose(ends[0], a, atol=1e-10) and torch.allclose(ends[1], b, atol=1e-10)
    # the whole circle, not the arc: angle φ is the angle from a (mod 2π), both ways round
    cos_to_a = (_unit(pts) @ _unit(a)).clamp(-1, 1)
    assert torch.allclose(cos_to_a, torch.cos(phi), atol=1e-10)
    assert (cos_to_a < -0.99).any(), "points opposite a are on the circle too"


def test_circle_with_a_radius_lies_on_the_great_circle_at_that_norm_and_matches_diff_ii_on_equal_norms():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(2, D, generator=g, dtype=torch.float64)
    b_scaled = b * 1.3  # unequal norms: Diff-II's own formula gives an ellipse through a and b
    phi = torch.rand(20, generator=g, dtype=torch.float64) * 2 * math.pi
    pts = geo.circle_interpolate(a, b_scaled, phi, radius=math.sqrt(D))
    assert torch.allclose(pts.norm(dim=-1), torch.full((20,), math.sqrt(D), dtype=torch.float64), rtol=1e-12)
    assert _in_plane(pts, a, b) < 1e-12
    ell = geo.circle_interpolate(a, b_scaled, phi)
    assert _in_plane(ell, a, b) < 1e-12
    assert ell.norm(dim=-1).std() > 0.1, "unequal norms: the Diff-II curve is not a circle"
    same = b / b.norm() * a.norm()
    assert torch.allclose(geo.circle_interpolate(a, same, phi), geo.circle_interpolate(a, same, phi, radius=float(a.norm())),
                          atol=1e-10)
    with pytest.raises(ValueError, match="parallel"):
        geo.circle_interpolate(a, 2 * a, phi)


def test_norm_keeping_centroid_has_the_inputs_mean_norm_and_the_mean_direction():
    g = torch.Generator().manual_seed(2)
    shared = torch.randn(D, generator=g, dtype=torch.float64)
    seeds = 0.8 * shared + 0.6 * torch.randn(5, D, generator=g, dtype=torch.float64)  # correlated, like inversions
    c = geo.norm_keeping_centroid(seeds)
    assert math.isclose(float(c.norm()), float(seeds.norm(dim=-1).mean()), rel_tol=1e-12)
    assert math.isclose(float(_unit(c) @ _unit(seeds.mean(0))), 1.0, rel_tol=1e-12)
    # the failure modes it avoids: the mean shrinks, COG (√K · mean) inflates correlated inputs
    assert geo.mean_centroid(seeds).norm() < 0.95 * c.norm() < geo.cog_centroid(seeds).norm()
    w = torch.tensor([1.0, 0, 0, 0, 3.0], dtype=torch.float64)
    cw = geo.norm_keeping_centroid(seeds, w)
    assert math.isclose(float(cw.norm()), float((seeds[0].norm() + 3 * seeds[4].norm()) / 4), rel_tol=1e-12)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=torch.float64)
    path = geo.norm_keeping_interpolate(seeds[0], seeds[1], t)
    assert torch.allclose(path[0], seeds[0]) and torch.allclose(path[2], seeds[1])
    assert math.isclose(float(path[1].norm()), float(0.75 * seeds[0].norm() + 0.25 * seeds[1].norm()), rel_tol=1e-12)
    with pytest.raises(ValueError, match="weights"):
        geo.norm_keeping_centroid(seeds, torch.zeros(5))


def test_registry_plans_circle_and_norm_mean_deterministically_from_the_run_seed():
    assert {"circle", "norm-mean"} <= set(SEED_METHODS)
    g = torch.Generator().manual_seed(3)
    inv = torch.randn(4, 4, 8, 8, generator=g) * 0.9
    flat = inv.reshape(4, -1).double()
    kw = dict(concept_id="c", methods=("circle", "norm-mean"), num_images=7)
    p1, p2 = plan_seeds(inv, base_seed=5, **kw), plan_seeds(inv, base_seed=5, **kw)
    assert torch.equal(p1.seeds, p2.seeds) and [r.to_dict() for r in p1.rows] == [r.to_dict() for r in p2.rows]
    p3 = plan_seeds(inv, base_seed=6, **kw)
    circ = [i for i, r in enumerate(p1.rows) if r.method == "circle"]
    assert len(circ) == 7 and not torch.equal(p1.seeds[circ], p3.seeds[circ])
    angles = circle_angles(5, "c", 7)
    pairs = spread_pairs(4)
    for n, i in enumerate(circ):
        row = p1.rows[i]
        assert row.pair == pairs[n % len(pairs)] and math.isclose(row.t * 2 * math.pi, float(angles[n]))
        a, b = flat[row.pair[0]], flat[row.pair[1]]
        assert _in_plane(p1.seeds[i].reshape(1, -1), a, b) < 1e-5
    nm = [i for i, r in enumerate(p1.rows) if r.method == "norm-mean" and r.kind == "centroid"]
    assert math.isclose(float(p1.seeds[nm[0]].double().norm()), float(flat.norm(dim=-1).mean()), rel_tol=1e-5)
    with pytest.raises(ValueError, match="at least 2 reference"):
        plan_seeds(inv[:1], base_seed=0, concept_id="solo", methods=("circle",), num_images=2)
