"""The geodesic solver's tridiagonal systems are solved by a banded recursion whose result for a
path does not depend on the batch, and a plan solves only the paths its budget samples."""

from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest
import torch
from scipy.linalg import solveh_banded

from normguide.data.plan import path_points, plan_seeds, spread_pairs
from normguide.geometry.planar import solve_tridiagonal


def _systems(M: int, n: int, seed: int, pd: bool = True):
    g = torch.Generator().manual_seed(seed)
    off = torch.rand(M, n - 1, generator=g, dtype=torch.float64) - 0.5
    diag = torch.rand(M, n, generator=g, dtype=torch.float64) + (2.0 if pd else -0.5)
    rhs = torch.randn(M, n, 3, generator=g, dtype=torch.float64)
    return diag, off, rhs


@pytest.mark.parametrize("M, n", [(1, 2), (3, 5), (7, 10), (20, 63)])
def test_banded_solve_equals_dense_and_scipy(M, n):
    diag, off, rhs = _systems(M, n, seed=M * 100 + n)
    x, pd = solve_tridiagonal(diag, off, rhs)
    assert pd.all()
    H = torch.diag_embed(diag) + torch.diag_embed(off, 1) + torch.diag_embed(off, -1)
    dense = torch.linalg.solve(H, rhs)
    torch.testing.assert_close(x, dense, rtol=1e-10, atol=1e-12)
    for i in range(M):
        band = np.zeros((2, n))
        band[0, 1:], band[1] = off[i].numpy(), diag[i].numpy()
        np.testing.assert_allclose(x[i].numpy(), solveh_banded(band, rhs[i].numpy()), rtol=1e-10, atol=1e-12)


def test_indefinite_systems_are_reported():
    diag, off, rhs = _systems(6, 8, seed=3)
    diag[2, 4] = -5.0
    _, pd = solve_tridiagonal(diag, off, rhs)
    assert pd.tolist() == [True, True, False, True, True, True]


def test_a_path_solves_the_same_whatever_its_batch():
    diag, off, rhs = _systems(40, 63, seed=7)
    full, _ = solve_tridiagonal(diag, off, rhs)
    for rows in ([0], [3, 5, 11], list(range(16)), list(range(17))):
        part, _ = solve_tridiagonal(diag[rows], off[rows], rhs[rows])
        assert torch.equal(part, full[rows])  # bit for bit


def _spread_pairs_reference(k):  # the O(P^2) greedy scan the heap replaced
    remaining, use, order = list(combinations(range(k), 2)), [0] * k, []
    while remaining:
        best = min(remaining, key=lambda p: (use[p[0]] + use[p[1]], max(use[p[0]], use[p[1]]), p))
        remaining.remove(best)
        use[best[0]] += 1
        use[best[1]] += 1
        order.append(best)
    return order


@pytest.mark.parametrize("k", range(0, 14))
def test_spread_pairs_keeps_its_order(k):
    ref = _spread_pairs_reference(k)
    assert spread_pairs(k) == ref
    assert spread_pairs(k, 5) == ref[:5]


def test_a_thousand_references_plan_only_the_paths_they_sample():
    """1,000 references and 8 images: 7 of the 499,500 pair paths are ordered and solved (today:
    every pair was ordered by an O(P^2) scan and solved: it did not finish)."""
    assert len(spread_pairs(1000, 7)) == 7
    assert path_points(499_500 + 1000, 7, None) == [(p, 0.5) for p in range(7)]
    inv = torch.randn(300, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    plan = plan_seeds(inv, concept_id="c", methods=("nao",), num_images=8)
    assert len(plan.rows) == 8 and [r.pair for r in plan.rows[1:4]] == [(0, 1), (2, 3), (4, 5)]
    assert torch.isfinite(plan.seeds).all()
