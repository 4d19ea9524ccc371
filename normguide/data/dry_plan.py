"""The dry-run seed plan of ``normguide plan``: per concept, what ``run`` would plan, from N(0, I)
stand-ins for the concept's inverted seeds.

The stand-ins depend only on the number of references K (one fixed generator seed), so every
concept with the same (K, num_images) has the same geometry: it is computed once per
(K, num_images) and reused (10,000 concepts of 5 references plan in about the time of one). Only
the ``random`` method depends on the concept (its integer seeds derive from the concept id), so
it is planned per concept (no geometry: N(0, I) draws).
"""

from __future__ import annotations

import math

import torch

from normguide.data.plan import get_method, plan_seeds

#: One plan row of the table ``plan`` prints: method, kind, images, t values, pairs, z range.
Row = tuple[str, str, str, str, str, str]


def _stand_in(k: int, shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(k, *shape, generator=torch.Generator().manual_seed(0))


def _groups(plan, prior) -> dict[str, list[Row]]:
    """Rows per method, in plan order."""
    z = prior.zscore(plan.seeds.reshape(len(plan.rows), -1).double()).tolist()
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(plan.rows):
        groups.setdefault((r.method, r.kind), []).append(i)
    out: dict[str, list[Row]] = {}
    for (method, kind), idx in groups.items():
        ts = sorted({plan.rows[i].t for i in idx if plan.rows[i].t is not None})
        pairs = sorted({tuple(plan.rows[i].pair) for i in idx if plan.rows[i].pair is not None})
        zs = [z[i] for i in idx]
        out.setdefault(method, []).append((
            method, kind, str(len(idx)), ", ".join(f"{t:.2f}" for t in ts) or "-",
            " ".join(("c" if a < 0 else str(a)) + "-" + str(b) for a, b in pairs) or "-",
            f"{min(zs):+.2f}..{max(zs):+.2f}"))
    return out


def dry_plans(cfg, concepts, shape: tuple[int, ...]) -> list[tuple[object, list[Row]]]:
    """Per concept, its rows (method, kind, count, t values, pairs, z range) of the seed plan made
    from N(0, I) stand-ins for its inverted seeds; the same rows as planning each concept alone."""
    from normguide.geometry import ChiPrior

    prior = ChiPrior(math.prod(shape))
    p = cfg.plan
    random_methods = tuple(m for m in p.methods if get_method(m).is_random)
    fixed_methods = tuple(m for m in p.methods if m not in random_methods)
    settings = dict(include_centroid=p.include_centroid, pair_paths=p.pair_paths, centroid_paths=p.centroid_paths,
                    include_inversions=p.include_inversions, t_values=p.t_values, base_seed=cfg.seed)
    cache: dict[tuple[int, int], dict[str, list[Row]]] = {}
    out = []
    for c in concepts:
        k, n = len(c.reference_uris), c.num_images or p.num_images
        if (k, n) not in cache:  # the geometry: identical for every concept with these K and n
            cache[(k, n)] = _groups(plan_seeds(_stand_in(k, shape), concept_id=c.concept_id, methods=fixed_methods,
                                               num_images=n, **settings), prior) if fixed_methods else {}
        groups = dict(cache[(k, n)])
        if random_methods:  # per concept: its seeds derive from the concept id
            groups.update(_groups(plan_seeds(_stand_in(k, shape), concept_id=c.concept_id, methods=random_methods,
                                             num_images=n, **settings), prior))
        out.append((c, [row for m in p.methods for row in groups.get(m, [])]))
    return out
