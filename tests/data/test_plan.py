"""Seed plans: counts, order, ids, determinism, and the geometry each method uses."""

import pytest
import torch

from normguide import geometry as geo
from normguide.data.plan import path_points, plan_seeds, random_seed_for

SHAPE = (4, 8, 8)


def _seeds(k, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(k, *SHAPE, generator=g) * scale


def _plan(inv, **kw):
    args = dict(concept_id="c", methods=("nao",), num_images=6)
    args.update(kw)
    return plan_seeds(inv, **args)


def test_counts_ids_and_alignment():
    plan = _plan(_seeds(3))
    assert [r.image_id for r in plan.rows] == ["nao-centroid-00000"] + [f"nao-interpolant-{i:05d}" for i in range(5)]
    assert plan.seeds.shape == (6, *SHAPE) and plan.seeds.dtype == torch.float32
    assert torch.equal(plan.seeds[0], plan.centroids["nao"])
    # 3 pair paths + 3 centroid paths, 5 slots: the midpoint of five paths first
    assert [r.t for r in plan.rows[1:]] == [0.5] * 5
    assert [r.pair for r in plan.rows[1:]] == [(0, 1), (0, 2), (1, 2), (-1, 0), (-1, 1)]


def test_planned_points_lie_on_their_paths():
    inv = _seeds(3, scale=1.1)
    plan = _plan(inv, num_images=13, methods=("nao", "slerp"))
    flat = inv.reshape(3, -1)
    for row, z in zip(plan.rows, plan.seeds.reshape(len(plan.rows), -1)):
        if row.kind != "interpolant" or row.pair[0] < 0:
            continue
        i, j = row.pair
        t = torch.tensor([row.t], dtype=torch.float64)
        fn = geo.nao_interpolate if row.method == "nao" else geo.slerp
        torch.testing.assert_close(z, fn(flat[i], flat[j], t)[0], rtol=1e-5, atol=1e-5)
    # slerp centroid = mean direction at the prior's mode
    torch.testing.assert_close(plan.centroids["slerp"].reshape(-1), geo.normalized_centroid(flat))


def test_deterministic_and_t_values():
    a = _plan(_seeds(2), num_images=5, t_values=(0.25, 0.75))
    b = _plan(_seeds(2), num_images=5, t_values=(0.25, 0.75))
    assert a.rows == b.rows and torch.equal(a.seeds, b.seeds)
    # paths: pair (0,1) + centroid->0 + centroid->1; t nearest 0.5 first (tie: smaller t)
    assert [r.t for r in a.rows[1:]] == [0.25, 0.25, 0.25, 0.75]


def test_random_method_seeds_are_reproducible_per_concept():
    p1 = _plan(_seeds(2), methods=("random",), num_images=3)
    p2 = _plan(_seeds(2), methods=("random",), num_images=3)
    other = _plan(_seeds(2), methods=("random",), num_images=3, concept_id="d")
    assert [r.kind for r in p1.rows] == ["random"] * 3
    assert torch.equal(p1.seeds, p2.seeds) and not torch.equal(p1.seeds, other.seeds)
    s = random_seed_for(0, "c", 1)
    assert p1.rows[1].seed == s
    torch.testing.assert_close(p1.seeds[1], torch.randn(SHAPE, generator=torch.Generator().manual_seed(s)))


def test_single_reference_and_inversions():
    plan = _plan(_seeds(1), num_images=3, include_inversions=True, methods=("nao", "lerp"))
    kinds = [(r.method, r.kind) for r in plan.rows]
    assert kinds.count(("nao", "inversion")) == 1 and ("lerp", "inversion") not in kinds
    assert all(r.pair == (-1, 0) for r in plan.rows if r.kind == "interpolant")
    assert torch.isfinite(plan.seeds).all()


def test_path_points_budget():
    assert path_points(0, 5, None) == []
    pts = path_points(2, 5, None)  # m = 3 per path: t = .25 .5 .75, midpoints first
    assert pts == [(0, 0.5), (1, 0.5), (0, 0.25), (1, 0.25), (0, 0.75)]


def test_bad_input():
    with pytest.raises(ValueError, match="non-finite"):
        _plan(torch.full((2, *SHAPE), float("nan")))
    with pytest.raises(ValueError, match="unknown method 'bogus'"):
        _plan(_seeds(2), methods=("bogus",))


def test_fitted_prior_method_keeps_seeds_at_the_inversions_norm():
    inv = _seeds(4, scale=0.75)  # norms ~12 of a chi mode ~16: inside the shell, as real inversions are
    norms = inv.reshape(4, -1).norm(dim=-1)
    plan = _plan(inv, methods=("nao", "nao-fitted"), num_images=7)
    fitted = torch.stack([z for r, z in zip(plan.rows, plan.seeds) if r.method == "nao-fitted"]).reshape(7, -1)
    chi = torch.stack([z for r, z in zip(plan.rows, plan.seeds) if r.method == "nao"]).reshape(7, -1)
    assert (fitted.norm(dim=-1) - norms.mean()).abs().max() < 1.0
    assert (chi.norm(dim=-1) - norms.mean()).abs().min() > 1.0  # the chi prior pulls them out to its shell


def test_paper_reference_method_follows_the_reference_call_site():
    plan = _plan(_seeds(2), methods=("paper-reference",), num_images=6)
    assert [r.kind for r in plan.rows] == ["interpolant"] * 6 and "paper-reference" in plan.centroids
    assert {r.pair for r in plan.rows} == {(-1, 0), (-1, 1)} and all(0 < r.t < 1 for r in plan.rows)
    assert torch.isfinite(plan.seeds).all()
    with pytest.raises(ValueError, match="paper-reference.*exactly 2 reference images.*has 3"):
        _plan(_seeds(3), methods=("paper-reference",))


@pytest.mark.slow  # the paper's Adam solver: minutes on a loaded machine (issue 23)
def test_paper_method_plans_with_the_papers_solver():
    inv = _seeds(3, scale=1.0)
    plan = _plan(inv, methods=("paper",), num_images=4)
    torch.testing.assert_close(plan.centroids["paper"].reshape(-1), geo.paper_centroid(inv.reshape(3, -1), 50))
    assert torch.isfinite(plan.seeds).all() and len(plan.rows) == 4
