"""Seed plans: which seeds a concept's images are generated from, as data.

Notation (per concept): K inverted seeds s_1..s_K (DDIM inversions of the reference images),
one centroid c per method, and points on paths

    pair paths      s_i -> s_j   for i < j          (``pair = [i, j]``)
    centroid paths  c   -> s_j   for every j        (``pair = [-1, j]``: -1 stands for the centroid)

sampled at interior fractions t of each path. The method decides the geometry:

    method  centroid              path
    nao     nao_centroid          NAO geodesic (nao_interpolate / nao_centroid_paths)
    slerp   normalized_centroid   slerp
    lerp    mean_centroid         lerp
    cog     cog_centroid          cog
    random  -                     -     (N(0, I) seeds, one integer seed per image)

Counting: ``num_images`` per method = the centroid (if planned) + interpolants; when t values are
not fixed, each path gets m = ceil(remaining / paths) evenly spaced points t = j / (m + 1), and
the points are taken midpoint-first across all paths (the t nearest 0.5 on every path, then the
next), so a budget that does not divide evenly still covers every path. Inversions
(``include_inversions``) are extra: one image per reference, from its own seed, planned once
under the first non-random method.

Everything here is deterministic: the same seeds and settings give the same plan, row order and
image ids (``<method>-<kind>-<index:05d>``).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from itertools import combinations

import torch

from normguide import geometry as geo

KINDS = ("centroid", "interpolant", "inversion", "random")

_BASELINES = {
    "slerp": (geo.normalized_centroid, geo.slerp),
    "lerp": (geo.mean_centroid, geo.lerp),
    "cog": (geo.cog_centroid, geo.cog),
}


@dataclass(frozen=True)
class PlannedSeed:
    """One row of a seed plan (a small, JSON-able record)."""

    image_id: str
    method: str
    kind: str
    index: int
    pair: tuple[int, int] | None = None
    t: float | None = None
    seed: int | None = None
    sources: tuple[int, ...] = ()  # indices of the inverted seeds this one derives from

    def to_dict(self) -> dict:
        d = asdict(self)
        d["pair"] = list(self.pair) if self.pair is not None else None
        d["sources"] = list(self.sources)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PlannedSeed":
        return cls(
            image_id=d["image_id"], method=d["method"], kind=d["kind"], index=d["index"],
            pair=tuple(d["pair"]) if d.get("pair") is not None else None,
            t=d.get("t"), seed=d.get("seed"), sources=tuple(d.get("sources", ())),
        )


@dataclass
class SeedPlan:
    rows: list[PlannedSeed]
    seeds: torch.Tensor  # (N, *seed_shape) float32, row-aligned with ``rows``
    centroids: dict[str, torch.Tensor]  # method -> (*seed_shape) float32


def image_id(method: str, kind: str, index: int) -> str:
    return f"{method}-{kind}-{index:05d}"


def random_seed_for(base_seed: int, concept_id: str, index: int) -> int:
    """The integer seed of the index-th random image of a concept (stable across runs and machines)."""
    h = hashlib.sha256(f"{base_seed}:{concept_id}:{index}".encode()).digest()
    return int.from_bytes(h[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def path_points(
    n_paths: int, budget: int, t_values: tuple[float, ...] | None
) -> list[tuple[int, float]]:
    """(path index, t) pairs for ``budget`` interpolants spread over ``n_paths`` paths."""
    if n_paths == 0 or budget <= 0:
        return []
    if t_values is None:
        m = math.ceil(budget / n_paths)
        ts = [j / (m + 1) for j in range(1, m + 1)]
    else:
        ts = list(t_values)
    # midpoint-first: every path's most central t, then the next, ... (ties: smaller t first)
    order = sorted(range(len(ts)), key=lambda j: (abs(ts[j] - 0.5), ts[j]))
    points = [(p, ts[j]) for j in order for p in range(n_paths)]
    return points[:budget]


def plan_seeds(
    inverted: torch.Tensor,
    *,
    concept_id: str,
    methods: tuple[str, ...],
    num_images: int,
    include_centroid: bool = True,
    pair_paths: bool = True,
    centroid_paths: bool = True,
    include_inversions: bool = False,
    t_values: tuple[float, ...] | None = None,
    base_seed: int = 0,
    prior=None,
) -> SeedPlan:
    """Plan the seeds of one concept from its K inverted seeds ``(K, *seed_shape)``."""
    # 1. Check inputs
    if inverted.ndim < 2 or inverted.shape[0] < 1:
        raise ValueError(f"concept {concept_id!r}: inverted seeds must have shape (K, ...), K >= 1, got {tuple(inverted.shape)}")
    if not torch.isfinite(inverted).all():
        raise ValueError(f"concept {concept_id!r}: inverted seeds contain non-finite values")
    K = inverted.shape[0]
    shape = tuple(inverted.shape[1:])
    flat = inverted.reshape(K, -1).to(torch.float32)

    rows: list[PlannedSeed] = []
    chunks: list[torch.Tensor] = []
    centroids: dict[str, torch.Tensor] = {}
    for method in methods:
        # 2. Random seeds: no geometry, one integer seed per image
        if method == "random":
            seeds = [random_seed_for(base_seed, concept_id, i) for i in range(num_images)]
            gen = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
            chunks.append(torch.stack(gen).reshape(num_images, -1))
            rows += [PlannedSeed(image_id(method, "random", i), method, "random", i, seed=s) for i, s in enumerate(seeds)]
            continue

        # 3. Paths of this concept: pairs of seeds, then centroid -> each seed
        pairs = list(combinations(range(K), 2)) if pair_paths else []
        n_paths = len(pairs) + (K if centroid_paths else 0)
        budget = num_images - (1 if include_centroid else 0)
        points = path_points(n_paths, budget, t_values)
        ts = sorted({t for _, t in points})
        t_index = {t: i for i, t in enumerate(ts)}
        t_tensor = torch.tensor(ts, dtype=torch.float64)

        # 4. Centroid and path points by the method's geometry
        need_c_paths = any(p >= len(pairs) for p, _ in points)
        if method == "nao":
            if need_c_paths:
                centroid, c_paths = geo.nao_centroid_paths(flat, t_tensor, prior=prior)
            else:
                centroid, c_paths = geo.nao_centroid(flat, prior=prior), None
            interp = lambda a, b: geo.nao_interpolate(a, b, t_tensor, prior=prior)  # noqa: E731
        elif method in _BASELINES:
            centroid_fn, interp_fn = _BASELINES[method]
            centroid = centroid_fn(flat)
            interp = lambda a, b: interp_fn(a, b, t_tensor)  # noqa: E731
            c_paths = interp(centroid.expand(K, -1), flat) if need_c_paths else None
        else:
            raise ValueError(f"unknown method {method!r}; expected one of nao, slerp, lerp, cog, random")
        centroid = centroid.to(torch.float32)
        centroids[method] = centroid.reshape(shape)
        p_paths = None
        if pairs and any(p < len(pairs) for p, _ in points):
            ia = torch.tensor([i for i, _ in pairs])
            ib = torch.tensor([j for _, j in pairs])
            p_paths = interp(flat[ia], flat[ib])  # (P, T, d)

        # 5. Rows, in plan order
        if include_centroid:
            rows.append(PlannedSeed(image_id(method, "centroid", 0), method, "centroid", 0, sources=tuple(range(K))))
            chunks.append(centroid.reshape(1, -1))
        pts = []
        for idx, (p, t) in enumerate(points):
            if p < len(pairs):
                i, j = pairs[p]
                pts.append(p_paths[p, t_index[t]])
                rows.append(PlannedSeed(image_id(method, "interpolant", idx), method, "interpolant", idx, pair=(i, j), t=t, sources=(i, j)))
            else:
                j = p - len(pairs)
                pts.append(c_paths[j, t_index[t]])
                rows.append(PlannedSeed(image_id(method, "interpolant", idx), method, "interpolant", idx, pair=(-1, j), t=t, sources=tuple(range(K))))
        if pts:
            chunks.append(torch.stack(pts).to(torch.float32))
        if include_inversions and method == next(m for m in methods if m != "random"):
            # inversions do not depend on the method: planned once, under the first one
            rows += [PlannedSeed(image_id(method, "inversion", k), method, "inversion", k, sources=(k,)) for k in range(K)]
            chunks.append(flat)

    seeds = torch.cat(chunks).reshape(len(rows), *shape).contiguous() if chunks else torch.empty(0, *shape)
    return SeedPlan(rows=rows, seeds=seeds, centroids=centroids)
