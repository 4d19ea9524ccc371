"""The seed-norm plot of one concept: where its seeds sit relative to the Gaussian shell.

A seed z ~ N(0, I_d) has norm r = |z| ~ chi(d); its z-score (r − mean) / std under that prior
(:class:`normguide.geometry.ChiPrior`, the manifest's ``seed_zscore``) is about N(0, 1), so
|z| ≤ 2 is the typical band the model was trained on. One column per group: the DDIM-inverted
seeds of the references, then each method's planned seeds (marker by kind: centroid, interpolant,
inversion, random). DDIM inversions often sit far outside the band; LERP midpoints fall inside
the shell (large negative z); NAO keeps its seeds in the band. With seeds far out the y axis is
symmetric-log (linear within ±2), so the band stays readable.

Matplotlib's Agg canvas is used directly (no global backend switch, nothing shown); the PNG
carries no timestamp or software tag, so the same seeds give the same bytes.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Half-width of the typical band (in prior standard deviations).
TYPICAL = 2.0
#: Marker per seed kind.
#: y ticks of the symmetric-log axis (and their negatives).
_TICKS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0)
#: Seeds in a column above which markers shrink (an overview of a whole run).
CROWDED = 40
MARKERS = {"centroid": ("*", 140), "interpolant": ("o", 28), "inversion": ("X", 50), "random": ("^", 32)}


@dataclass(frozen=True)
class PlannedZ:
    """A planned seed's method, kind and norm z-score."""

    method: str
    kind: str
    z: float


def seed_norm_plot(title: str, inverted_z: Sequence[float], planned: Sequence[PlannedZ], *, dim: int) -> bytes:
    """PNG bytes of the plot (see the module docstring).

    Args:
        title: the figure title (the concept).
        inverted_z: z-scores of the K inverted seeds, in reference order.
        planned: the planned seeds, in plan order (column order = first appearance of a method).
        dim: the seed dimension d (named in the axis label).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    methods = list(dict.fromkeys(p.method for p in planned))
    groups = ["inverted\n(references)", *methods]
    fig = Figure(figsize=(max(5.0, 1.25 * len(groups) + 2.2), 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.axhspan(-TYPICAL, TYPICAL, color="#2e7d32", alpha=0.12, lw=0,
               label=f"typical band |z| ≤ {TYPICAL:g} (N(0, I) seeds)")
    ax.axhline(0.0, color="#2e7d32", lw=0.8, alpha=0.6)

    def jitter(n: int) -> np.ndarray:  # deterministic spread of a column's points
        return np.zeros(n) if n <= 1 else np.linspace(-0.22, 0.22, n)

    def shrink(n: int) -> float:  # a column of many seeds (a whole run): smaller markers, no overdraw blob
        return 1.0 if n <= CROWDED else max(0.08, (CROWDED / n) ** 0.5)

    all_z = list(inverted_z) + [p.z for p in planned]
    inv = np.asarray(inverted_z, dtype=float)
    k = shrink(len(inv))
    ax.scatter(0 + jitter(len(inv)), inv, marker="D", s=34 * k, color="#b35c00", edgecolor="black",
               lw=0.4 * k, label="inverted seed", zorder=3)
    for x, method in enumerate(methods, start=1):
        rows = [p for p in planned if p.method == method]
        xs = x + jitter(len(rows))
        k = shrink(len(rows))
        for kind, (marker, size) in MARKERS.items():
            idx = [i for i, p in enumerate(rows) if p.kind == kind]
            if not idx:
                continue
            ax.scatter(xs[idx], [rows[i].z for i in idx], marker=marker, s=size * k, color=f"C{(x - 1) % 10}",
                       edgecolor="black", lw=0.4 * k, zorder=3)
    kinds = [k for k in MARKERS if any(p.kind == k for p in planned)]
    for kind in kinds:  # legend entries in grey: colour is the method, marker the kind
        marker, size = MARKERS[kind]
        ax.scatter([], [], marker=marker, s=size, color="#bbbbbb", edgecolor="black", lw=0.4, label=f"planned: {kind}")
    ax.set_xticks(range(len(groups)), groups, fontsize=9)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    low, high = min(all_z + [0.0]), max(all_z + [0.0])
    if max(-low, high) > 4 * TYPICAL:
        ax.set_yscale("symlog", linthresh=TYPICAL, linscale=1.5)
        low, high = min(-4.0, low * 1.5), max(4.0, high * 1.5)
        ticks = sorted({0.0, *(v for v in _TICKS if v <= high), *(-v for v in _TICKS if -v >= low)})
        ax.set_yticks(ticks, [f"{v:+g}" if v else "0" for v in ticks])
        ax.minorticks_off()
        scale = "symmetric-log axis, linear within ±2"
    else:
        low, high = min(-3.0, low * 1.15), max(3.0, high * 1.15)
        scale = "linear axis"
    ax.set_ylim(low, high)
    ax.set_ylabel("seed-norm z-score", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.axvline(0.5, color="#555555", lw=1.0)
    fig.suptitle(f"{title}\nz-score of the seed norm under the chi prior of N(0, I),\nd = {dim} ({scale})",
                 fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return buf.getvalue()
