"""Seed-norm z-score along LERP, SLERP and NAO paths between two DDIM-inversion-like seeds.

    .venv/bin/python examples/plot_norm_profile.py   → examples/figures/norm_profile.png

The endpoints have atypical norms (0.8x and 1.15x the chi mode, d = 4·64·64), as DDIM
inversions often do. LERP sags ~60 std below the prior's shell; SLERP moves its norm from one
atypical endpoint's to the other's and crosses the shell only mid-way; NAO goes to the shell as
fast as the metric allows and stays there. t is each method's own parameter (for NAO: the
fraction of Euclidean arc length).
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from normguide.geometry import ChiPrior, lerp, nao_interpolate, slerp  # noqa: E402

D = 4 * 64 * 64
OUT = Path(__file__).parent / "figures" / "norm_profile.png"


def main(out: Path = OUT) -> Path:
    prior = ChiPrior(D)
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, D, generator=g, dtype=torch.float64)
    a = 0.8 * prior.mode * a / a.norm()
    b = 1.15 * prior.mode * b / b.norm()
    t = torch.linspace(0, 1, 201, dtype=torch.float64)
    paths = {"LERP": (lerp(a, b, t), "#d62728", "--"), "SLERP": (slerp(a, b, t), "#1f77b4", "-."),
             "NAO (geodesic)": (nao_interpolate(a, b, t), "#2ca02c", "-")}

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=100)
    ax.axhspan(-3, 3, color="0.85", label="prior ±3 std")
    ax.axhspan(-1, 1, color="0.65", label="prior ±1 std")
    for name, (pts, color, ls) in paths.items():
        ax.plot(t.numpy(), prior.zscore(pts).numpy(), color=color, ls=ls, lw=2.2, label=name)
    ax.set_xlim(0, 1)
    ax.set_xlabel("t (fraction of the path)")
    ax.set_ylabel("z-score of seed norm |z(t)|")
    ax.set_title(f"Seed norm along interpolation paths (d = {D}, endpoints at 0.8x and 1.15x the chi mode)",
                 fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", framealpha=0.95)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


if __name__ == "__main__":
    print(main())
