"""Seed health statistics (pure torch): how Gaussian a seed looks.

An inverted seed need not look like a draw from N(0, I) (NoiseDiffusion, ICLR 2024): NAO fixes
its norm only. ``seed_health`` records, per seed:

- ``norm`` and ``norm_zscore``: |z| and its z-score under the chi law of a d-dimensional
  standard Gaussian (``ChiPrior``; |z| ≈ √(d − ½) ± 1/√2 for a Gaussian seed);
- ``channel_mean`` / ``channel_var``: per latent channel (0 and 1 for a Gaussian seed);
- ``autocorr``: per scale s = 1, 2, 4, ... (the seed average-pooled by s, times s so that a
  Gaussian stays unit-variance), the mean of the lag-1 products E[z·roll(z, 1)] along height and
  width (≈ 0 ± 1/√(d/s²) for a Gaussian seed): pix2pix-zero's regulariser's multi-scale statistic;
- ``autocorr_max``: the largest |autocorr| over the scales, one number for a gate or a table;
- ``round_trip_error``: the invert -> regenerate latent RMSE, where measured (else None).
"""

from __future__ import annotations

import torch

from normguide.geometry.prior import ChiPrior

#: Keys of one record of ``seed_health`` (the seeds file's and the manifest's columns).
HEALTH_KEYS: tuple[str, ...] = ("norm", "norm_zscore", "channel_mean", "channel_var", "autocorr", "autocorr_max",
                                "round_trip_error")


def autocorrelation(seeds: torch.Tensor, *, min_side: int = 2) -> torch.Tensor:
    """(N, S) multi-scale lag-1 auto-correlation of (N, C, h, w) seeds: at scale 2^k the seed is
    average-pooled by 2^k (and multiplied by 2^k to keep a Gaussian's unit variance), then the mean
    over channels of E[z·roll(z, 1)] along height and along width, averaged; scales stop when a
    side would fall below ``min_side``."""
    if seeds.ndim != 4:
        raise ValueError(f"seeds must have shape (N, C, h, w), got {tuple(seeds.shape)}")
    z = seeds.double()
    out = []
    scale = 1
    while min(z.shape[-2:]) >= min_side:
        h = (z * z.roll(1, dims=-2)).mean(dim=(-1, -2, -3))
        w = (z * z.roll(1, dims=-1)).mean(dim=(-1, -2, -3))
        out.append((h + w) / 2)
        if min(z.shape[-2:]) < 2 * min_side:
            break
        z = torch.nn.functional.avg_pool2d(z, 2) * 2
        scale *= 2
    return torch.stack(out, dim=1).float()


def seed_health(seeds: torch.Tensor, round_trip_error: list[float] | None = None) -> list[dict]:
    """One health record (``HEALTH_KEYS``) per seed of (N, C, h, w) ``seeds``; plain floats and
    lists, ready for JSON or a table."""
    if seeds.ndim != 4 or seeds.shape[0] == 0:
        raise ValueError(f"seeds must have shape (N, C, h, w) with N >= 1, got {tuple(seeds.shape)}")
    if round_trip_error is not None and len(round_trip_error) != seeds.shape[0]:
        raise ValueError(f"round_trip_error has {len(round_trip_error)} values for {seeds.shape[0]} seeds")
    flat = seeds.reshape(seeds.shape[0], -1).double()
    prior = ChiPrior(flat.shape[1])
    norms, z = flat.norm(dim=1), prior.zscore(flat)
    mean = seeds.double().mean(dim=(-1, -2))
    var = seeds.double().var(dim=(-1, -2), unbiased=False)
    ac = autocorrelation(seeds)
    return [{
        "norm": float(norms[i]), "norm_zscore": float(z[i]),
        "channel_mean": [float(v) for v in mean[i]], "channel_var": [float(v) for v in var[i]],
        "autocorr": [float(v) for v in ac[i]], "autocorr_max": float(ac[i].abs().max()),
        "round_trip_error": None if round_trip_error is None else float(round_trip_error[i]),
    } for i in range(seeds.shape[0])]
