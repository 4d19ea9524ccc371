"""Seed plans: which seeds a concept's images are generated from, as data.

Notation (per concept): K inverted seeds s_1..s_K (DDIM inversions of the reference images),
one centroid c per method, and points on paths

    pair paths      s_i -> s_j   for i < j          (``pair = [i, j]``)
    centroid paths  c   -> s_j   for every j        (``pair = [-1, j]``: -1 stands for the centroid)

sampled at interior fractions t of each path. The method decides the geometry:

    (the registry :data:`SEED_METHODS` is the one list of methods; ``normguide methods``
    and the config's validation read it)

    method      centroid                      path
    nao         nao_centroid                  NAO geodesic (chi prior of N(0, I) seeds)
    nao-fitted  nao_centroid, fitted prior    NAO geodesic under a norm prior fitted to the
                                              concept's inverted seeds (FittedNormPrior)
    paper       paper_centroid                the paper's reference solver (paper_interpolate;
                                              a point at t is the path's nearest node)
    paper-reference                           the paper's reference pipeline exactly
                                              (paper_reference_seeds): K = 2 inversions only, no
                                              centroid image, images from the 2 x 48 interior
                                              points of the two centroid paths, evenly spread
    slerp       normalized_centroid           slerp
    lerp        mean_centroid                 lerp
    cog         cog_centroid                  cog
    norm-mean   norm_keeping_centroid         norm_keeping_interpolate (the weighted mean's direction
                                              at the weighted mean of the inputs' norms; COG/LOL
                                              family, safe for many correlated inputs)
    circle      -                             Diff-II's circle interpolation (circle_planner): each
                                              image a pair of inversions (spread_pairs order) and
                                              a uniformly random angle on the whole circle through
                                              them, drawn from (run seed, concept); no centroid image
    random      -                             -  (N(0, I) seeds, one integer seed per image)

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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from itertools import combinations, islice

import torch

from normguide import geometry as geo
from normguide.data.methods import METHOD_DESCRIPTIONS, METHODS

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
    """The integer seed of the index-th random image of a concept (stable across runs and machines).

    Below 2**53, so a float64 (pandas turns an int64 column with nulls into one) holds it exactly."""
    h = hashlib.sha256(f"{base_seed}:{concept_id}:{index}".encode()).digest()
    return int.from_bytes(h[:8], "big") & MAX_RANDOM_SEED


#: Random seeds are below 2**53: exact in float64, so a manifest read with pandas reproduces them.
MAX_RANDOM_SEED = 2**53 - 1


def spread_pairs(k: int, limit: int | None = None) -> list[tuple[int, int]]:
    """All pairs of ``k`` seeds (the first ``limit`` of them, if given), ordered so that every
    prefix uses the references as evenly as possible: (0, 1), (2, 3), (0, 2), (1, 3), ... A
    budget smaller than the number of paths then draws on every reference instead of only on
    seed 0's paths.

    The order is greedy: next comes the remaining pair with the least (use_a + use_b,
    max(use_a, use_b), a, b), ``use`` counting the pairs taken so far that contain a seed. A
    pair's key only grows as pairs are taken, so a heap whose stale entries are pushed back
    with their current key when popped gives that order in O(log P) per pair (P = k(k−1)/2),
    where scanning every remaining pair cost O(P) each (1,000 seeds: minutes, not ms)."""
    import heapq

    total = k * (k - 1) // 2
    n = total if limit is None else max(0, min(limit, total))
    if n == 0:
        return []
    kk = k * k
    # key = (s·k + m)·k² + a·k + b with s = use_a + use_b, m = max(use_a, use_b) < k; initially all
    # uses are 0 and the keys a·k + b are already in heap (sorted) order
    heap = [a * k + b for a, b in combinations(range(k), 2)]
    use = [0] * k
    order: list[tuple[int, int]] = []
    while len(order) < n:
        key = heapq.heappop(heap)
        ab = key % kk
        a, b = divmod(ab, k)
        ua, ub = use[a], use[b]
        current = ((ua + ub) * k + max(ua, ub)) * kk + ab
        if current != key:  # stale: its seeds were used since it was pushed
            heapq.heappush(heap, current)
            continue
        order.append((a, b))
        use[a] += 1
        use[b] += 1
    return order


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
    # midpoint-first: every path's most central t, then the next, ... (ties: smaller t first);
    # generated lazily: 1,000 seeds have 499,500 pair paths, of which a small budget uses few
    order = sorted(range(len(ts)), key=lambda j: (abs(ts[j] - 0.5), ts[j]))
    return list(islice(((p, ts[j]) for j in order for p in range(n_paths)), budget))



# ---------------------------------------------------------------------------------------------
# The registry of seed methods
# ---------------------------------------------------------------------------------------------
Prior = object  # anything that implements normguide.geometry's norm-prior protocol
Interpolate = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, Prior], torch.Tensor]


@dataclass(frozen=True)
class SeedMethod:
    """How one method places seeds: a centroid of the K inverted seeds and points on paths.

    Attributes:
        name: the method's name in configs, image ids and the manifest.
        description: one line for ``--help`` and reports.
        centroid: ``(K, d) float32, prior -> (d,)``; None for methods without geometry (random).
        interpolate: ``a (P, d), b (P, d), t (T,) float64, prior -> (P, T, d)``.
        centroid_paths: ``seeds (K, d), t, prior -> (centroid (d,), paths (K, T, d))`` when the
            method computes both at once (NAO); else paths come from ``interpolate``.
        prior: ``inverted (K, d) -> prior`` for the method's norm prior; None: the chi prior
            of N(0, I_d) seeds (the geometry's default).
        planner: ``(name, seeds (K, d), num_images, *, base_seed, concept_id) -> (rows,
            seeds (n, d), centroid (d,))`` for a method that places its seeds its own way
            (paper-reference, circle); the path settings (include_centroid, pair_paths,
            centroid_paths, t_values) do not apply to it.
    """

    name: str
    description: str
    centroid: Callable[[torch.Tensor, Prior], torch.Tensor] | None = None
    interpolate: Interpolate | None = None
    centroid_paths: Callable[[torch.Tensor, torch.Tensor, Prior], tuple[torch.Tensor, torch.Tensor]] | None = None
    prior: Callable[[torch.Tensor], Prior] | None = None
    planner: Callable[[str, torch.Tensor, int], tuple[list, torch.Tensor, torch.Tensor]] | None = None

    @property
    def is_random(self) -> bool:
        return self.centroid is None and self.planner is None


def _fitted_prior(flat: torch.Tensor) -> Prior:
    return geo.FittedNormPrior.fit(flat.to(torch.float64).norm(dim=-1), d=flat.shape[-1])


_PAPER_NODES = 50  # the reference code's path length n


def _paper_interpolate(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor, prior: Prior) -> torch.Tensor:
    """The paper's n-node path; the point at t is the node nearest t·(n − 1) (its nodes are
    about evenly spaced: the reference solver's penalty caps each segment at 2|a − b|/n)."""
    path = geo.paper_interpolate(a, b, _PAPER_NODES, prior=prior)  # (P, n, d)
    idx = torch.round(t * (_PAPER_NODES - 1)).long().clamp(1, _PAPER_NODES - 2)
    return path[:, idx]


def _paper_reference_planner(name: str, flat: torch.Tensor, num_images: int, **_context):
    """The reference call site (SeedSelect): the centroid of two inversions and both centroid
    paths' n − 2 interior points; ``num_images`` of those 2·(n − 2) points, evenly spread."""
    if flat.shape[0] != 2:
        raise ValueError(f"method {name!r} follows the paper's reference pipeline, which takes exactly 2 reference "
                         f"images per concept; this concept has {flat.shape[0]} (use 'paper' for any number)")
    centroid, points = geo.paper_reference_seeds(flat, _PAPER_NODES)  # (d,), (2 (n - 2), d)
    inner = _PAPER_NODES - 2
    picks = torch.linspace(0, points.shape[0] - 1, min(num_images, points.shape[0])).round().long().tolist()
    rows = []
    for idx, p in enumerate(picks):
        path, node = divmod(p, inner)  # path 0: seed 0 -> centroid; path 1: seed 1 -> centroid
        rows.append(PlannedSeed(image_id(name, "interpolant", idx), name, "interpolant", idx, pair=(-1, path),
                                t=1 - (node + 1) / (_PAPER_NODES - 1), sources=(0, 1)))
    return rows, points[picks].to(torch.float32), centroid


def circle_angles(base_seed: int, concept_id: str, n: int) -> torch.Tensor:
    """The ``n`` angles (radians, uniform in [0, 2π)) of a concept's circle-method images: a
    function of the run seed and the concept only (stable across runs and machines)."""
    h = hashlib.sha256(f"circle:{base_seed}:{concept_id}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(h[:8], "big") & MAX_RANDOM_SEED)
    return torch.rand(n, generator=gen, dtype=torch.float64) * (2 * math.pi)


def _circle_planner(name: str, flat: torch.Tensor, num_images: int, *, base_seed: int = 0, concept_id: str = ""):
    """Diff-II: image i uses the pair ``spread_pairs(K)[i mod P]`` and a random angle on the whole
    circle through the two inversions (``geo.circle_interpolate``); ``t`` records angle / 2π.
    The stored centroid (never generated) is the norm-keeping centroid."""
    K = flat.shape[0]
    if K < 2:
        raise ValueError(f"method {name!r} (Diff-II's circle interpolation) needs at least 2 reference images per "
                         f"concept; concept {concept_id!r} has {K}")
    pairs = spread_pairs(K)
    angles = circle_angles(base_seed, concept_id, num_images)
    rows, seeds = [], []
    for idx in range(num_images):
        i, j = pairs[idx % len(pairs)]
        seeds.append(geo.circle_interpolate(flat[i], flat[j], angles[idx : idx + 1])[0])
        rows.append(PlannedSeed(image_id(name, "interpolant", idx), name, "interpolant", idx, pair=(i, j),
                                t=float(angles[idx]) / (2 * math.pi), sources=(i, j)))
    out = torch.stack(seeds).to(torch.float32) if seeds else flat.new_empty(0, flat.shape[1])
    return rows, out, geo.norm_keeping_centroid(flat)


SEED_METHODS: dict[str, SeedMethod] = {
    m.name: m
    for m in (
        SeedMethod(
            "nao", METHOD_DESCRIPTIONS["nao"],
            centroid=lambda s, p: geo.nao_centroid(s, prior=p),
            interpolate=lambda a, b, t, p: geo.nao_interpolate(a, b, t, prior=p),
            centroid_paths=lambda s, t, p: geo.nao_centroid_paths(s, t, prior=p),
        ),
        SeedMethod(
            "nao-fitted", METHOD_DESCRIPTIONS["nao-fitted"],
            centroid=lambda s, p: geo.nao_centroid(s, prior=p),
            interpolate=lambda a, b, t, p: geo.nao_interpolate(a, b, t, prior=p),
            centroid_paths=lambda s, t, p: geo.nao_centroid_paths(s, t, prior=p),
            prior=_fitted_prior,
        ),
        SeedMethod(
            "paper", METHOD_DESCRIPTIONS["paper"],
            centroid=lambda s, p: geo.paper_centroid(s, _PAPER_NODES, prior=p),
            interpolate=_paper_interpolate,
        ),
        SeedMethod(
            "paper-reference", METHOD_DESCRIPTIONS["paper-reference"],
            planner=_paper_reference_planner,
        ),
        SeedMethod("slerp", METHOD_DESCRIPTIONS["slerp"],
                   centroid=lambda s, p: geo.normalized_centroid(s), interpolate=lambda a, b, t, p: geo.slerp(a, b, t)),
        SeedMethod("lerp", METHOD_DESCRIPTIONS["lerp"],
                   centroid=lambda s, p: geo.mean_centroid(s), interpolate=lambda a, b, t, p: geo.lerp(a, b, t)),
        SeedMethod("cog", METHOD_DESCRIPTIONS["cog"],
                   centroid=lambda s, p: geo.cog_centroid(s), interpolate=lambda a, b, t, p: geo.cog(a, b, t)),
        SeedMethod("norm-mean", METHOD_DESCRIPTIONS["norm-mean"],
                   centroid=lambda s, p: geo.norm_keeping_centroid(s),
                   interpolate=lambda a, b, t, p: geo.norm_keeping_interpolate(a, b, t)),
        SeedMethod("circle", METHOD_DESCRIPTIONS["circle"],
                   planner=_circle_planner),
        SeedMethod("random", METHOD_DESCRIPTIONS["random"]),
    )
}
if tuple(SEED_METHODS) != METHODS:  # normguide.data.methods names them for torch-free callers
    raise RuntimeError(f"SEED_METHODS {tuple(SEED_METHODS)} and normguide.data.methods.METHODS {METHODS} differ")


def get_method(name: str) -> SeedMethod:
    try:
        return SEED_METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; expected one of {', '.join(METHODS)}") from None


# ---------------------------------------------------------------------------------------------
# Planning
# ---------------------------------------------------------------------------------------------
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
) -> SeedPlan:
    """Plan the seeds of one concept from its K inverted seeds ``(K, *seed_shape)``."""
    # 1. Check inputs
    if inverted.ndim < 2 or inverted.shape[0] < 1:
        raise ValueError(f"concept {concept_id!r}: inverted seeds must have shape (K, ...), K >= 1, got {tuple(inverted.shape)}")
    if not torch.isfinite(inverted).all():
        raise ValueError(f"concept {concept_id!r}: inverted seeds contain non-finite values")
    resolved = [get_method(m) for m in methods]
    K = inverted.shape[0]
    shape = tuple(inverted.shape[1:])
    flat = inverted.reshape(K, -1).to(torch.float32)
    first_geometric = next((m.name for m in resolved if not m.is_random), None)

    # 2. Each method's rows and seeds, in the order the methods are given
    rows: list[PlannedSeed] = []
    chunks: list[torch.Tensor] = []
    centroids: dict[str, torch.Tensor] = {}
    for method in resolved:
        if method.is_random:
            r, s = _plan_random(method.name, concept_id, num_images, shape, base_seed)
        elif method.planner is not None:
            r, s, centroid = method.planner(method.name, flat, num_images, base_seed=base_seed, concept_id=concept_id)
            centroids[method.name] = centroid.to(torch.float32).reshape(shape)
        else:
            r, s, centroid = _plan_geometric(
                method, flat, num_images=num_images, include_centroid=include_centroid,
                pair_paths=pair_paths, centroid_paths=centroid_paths, t_values=t_values,
            )
            centroids[method.name] = centroid.reshape(shape)
            if include_inversions and method.name == first_geometric:
                # inversions do not depend on the method: planned once, under the first one
                r += [PlannedSeed(image_id(method.name, "inversion", k), method.name, "inversion", k, sources=(k,)) for k in range(K)]
                s = torch.cat([s, flat])
        rows += r
        chunks.append(s)

    seeds = torch.cat(chunks).reshape(len(rows), *shape).contiguous() if rows else torch.empty(0, *shape)
    return SeedPlan(rows=rows, seeds=seeds, centroids=centroids)


def _plan_random(name: str, concept_id: str, num_images: int, shape: tuple[int, ...], base_seed: int):
    seeds = [random_seed_for(base_seed, concept_id, i) for i in range(num_images)]
    gen = [torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in seeds]
    rows = [PlannedSeed(image_id(name, "random", i), name, "random", i, seed=s) for i, s in enumerate(seeds)]
    return rows, torch.stack(gen).reshape(num_images, -1)


def _plan_geometric(method: SeedMethod, flat: torch.Tensor, *, num_images: int, include_centroid: bool,
                    pair_paths: bool, centroid_paths: bool, t_values: tuple[float, ...] | None):
    """Rows, seeds ``(n, d)`` and the centroid ``(d,)`` of one geometric method."""
    K = flat.shape[0]
    name = method.name
    prior = method.prior(flat) if method.prior is not None else None

    # 1. Paths: pairs of seeds, then centroid -> each seed; the points the budget buys (only the
    #    pairs it samples are ordered and solved: the first ones of spread_pairs' order)
    n_pairs = K * (K - 1) // 2 if pair_paths else 0
    n_paths = n_pairs + (K if centroid_paths else 0)
    points = path_points(n_paths, num_images - (1 if include_centroid else 0), t_values)
    pairs = spread_pairs(K, max((p + 1 for p, _ in points if p < n_pairs), default=0))
    ts = sorted({t for _, t in points})
    t_index = {t: i for i, t in enumerate(ts)}
    t_tensor = torch.tensor(ts, dtype=torch.float64)

    # 2. Centroid and the path points the plan uses (paths nobody samples are not computed)
    need_c_paths = any(p >= n_pairs for p, _ in points)
    if need_c_paths and method.centroid_paths is not None:
        centroid, c_paths = method.centroid_paths(flat, t_tensor, prior)
    else:
        centroid = method.centroid(flat, prior)
        c_paths = method.interpolate(centroid.expand(K, -1), flat, t_tensor, prior) if need_c_paths else None
    centroid = centroid.to(torch.float32)
    p_paths = None
    if pairs:
        ia = torch.tensor([i for i, _ in pairs])
        ib = torch.tensor([j for _, j in pairs])
        p_paths = method.interpolate(flat[ia], flat[ib], t_tensor, prior)  # (P, T, d)

    # 3. Rows in plan order: the centroid, then the points midpoint-first
    rows: list[PlannedSeed] = []
    seeds: list[torch.Tensor] = []
    if include_centroid:
        rows.append(PlannedSeed(image_id(name, "centroid", 0), name, "centroid", 0, sources=tuple(range(K))))
        seeds.append(centroid)
    for idx, (p, t) in enumerate(points):
        if p < n_pairs:
            i, j = pairs[p]
            seeds.append(p_paths[p, t_index[t]])
            rows.append(PlannedSeed(image_id(name, "interpolant", idx), name, "interpolant", idx, pair=(i, j), t=t, sources=(i, j)))
        else:
            j = p - n_pairs
            seeds.append(c_paths[j, t_index[t]])
            rows.append(PlannedSeed(image_id(name, "interpolant", idx), name, "interpolant", idx, pair=(-1, j), t=t, sources=tuple(range(K))))
    out = torch.stack([s.to(torch.float32) for s in seeds]) if seeds else flat.new_empty(0, flat.shape[1])
    return rows, out, centroid
