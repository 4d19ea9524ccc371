"""Norm priors: the ``NormPrior`` protocol the solvers use, the chi prior of Gaussian seeds, and a
Gaussian prior fitted to observed seed norms (README.md, §2 "The norm prior").

All solvers only ever see a prior through ``NormPrior``: w(r) = −log p(r), its first two
derivatives, the mode (the argmin of w) and, for reports, mean, std and z-scores.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class NormPrior(Protocol):
    """What the geometry needs from a prior p(r) on the seed norm r = |z| > 0.

    Requirements (``check_prior`` tests the first two on every call):
      - w(r) = −log p(r) > 0 for every r > 0 (a conformal metric needs a positive factor;
        for a density this means p < 1 everywhere);
      - w is unimodal: decreasing below ``mode`` and increasing above it.
    ``neg_log_prob64`` and ``neg_log_prob_derivatives`` take and return float64 tensors of
    radii r > 0 (the solvers' inner loops); ``log_prob`` takes any radii and returns −inf for
    r ≤ 0, in r's floating dtype.
    """

    mode: float
    mean: float
    std: float

    def log_prob(self, r) -> torch.Tensor: ...

    def neg_log_prob64(self, r: torch.Tensor) -> torch.Tensor: ...

    def neg_log_prob_derivatives(self, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]: ...

    def zscore(self, x: torch.Tensor) -> torch.Tensor: ...


def _norm_zscore(prior, x: torch.Tensor) -> torch.Tensor:
    """(|x| − prior.mean) / prior.std for seeds ``x`` (..., d), computed in float64."""
    _check_last_dim(x, prior.d)
    r = torch.linalg.vector_norm(x.to(torch.float64), dim=-1)
    return ((r - prior.mean) / prior.std).to(_float_dtype(x))


def _float_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()


def _check_last_dim(x: torch.Tensor, d: int) -> None:
    if x.shape[-1] != d:
        raise ValueError(f"x must have last dimension d={d}, got shape {tuple(x.shape)}")


class ChiPrior:
    """Norm prior of z ~ N(0, I_d): r = |z| follows a chi distribution with d degrees of freedom.

    log p(r) = (d−1)·log r − r²/2 − ((d/2 − 1)·log 2 + lgamma(d/2)),   r > 0.

    Near the mode m = √(d−1) the terms are ~1e5 and cancel to ~1, so ``log_prob`` uses the
    equivalent, cancellation-free form (x = r/m − 1):

        log p(r) = log p(m) − (d−1)·(x − log1p(x) + x²/2).

    It is computed in float64 and returned in r's floating dtype; r ≤ 0 gives −inf.
    w = −log p ≥ −log p(m) > 0 for every d ≥ 2 (the chi density is below 0.6 everywhere).
    """

    def __init__(self, d: int):
        if isinstance(d, bool) or not isinstance(d, int) or d < 2:
            raise ValueError(f"d must be an int ≥ 2 (the seed dimension), got {d!r}")
        self.d = d
        self._log_norm = (d / 2 - 1) * math.log(2.0) + math.lgamma(d / 2)
        self.mode = math.sqrt(d - 1)
        self._log_p_mode = (d - 1) * math.log(self.mode) - self.mode**2 / 2 - self._log_norm
        self.mean = math.sqrt(2.0) * math.exp(math.lgamma((d + 1) / 2) - math.lgamma(d / 2))
        # Var = d − mean² cancels for large d; the asymptotic series is used where it is exact
        # to float64 (error O(d⁻⁴)).
        if d > 1000:
            self.std = math.sqrt(0.5 - 1 / (8 * d) - 1 / (16 * d**2) + 5 / (128 * d**3))
        else:
            self.std = math.sqrt(d - self.mean**2)

    def __repr__(self) -> str:
        return f"ChiPrior(d={self.d})"

    def log_prob(self, r) -> torch.Tensor:
        """Exact chi log-density of norms ``r`` (any shape)."""
        r_in = torch.as_tensor(r)
        r64 = r_in.to(torch.float64)
        x = r64 / self.mode - 1.0
        positive = r64 > 0
        x_safe = torch.where(positive, x, torch.zeros_like(x))
        lp = self._log_p_mode - (self.d - 1) * (x_safe - torch.log1p(x_safe) + 0.5 * x_safe * x_safe)
        lp = torch.where(positive, lp, torch.full_like(lp, -math.inf))
        return lp.to(_float_dtype(r_in))

    def zscore(self, x: torch.Tensor) -> torch.Tensor:
        """z-score of the norms of seeds ``x`` (..., d) → (...): (|x| − mean) / std."""
        return _norm_zscore(self, x)

    def neg_log_prob64(self, r: torch.Tensor) -> torch.Tensor:
        """w = −log p(r) for float64 radii r > 0, without ``log_prob``'s conversions and masks
        (the solvers' inner loops call it on radii they keep positive)."""
        x = r / self.mode - 1.0
        return (self.d - 1) * (x - torch.log1p(x) + 0.5 * x * x) - self._log_p_mode

    def neg_log_prob_derivatives(self, r: torch.Tensor):
        """w = −log p(r) and its first two derivatives, w' = r − (d−1)/r, w'' = 1 + (d−1)/r²
        (float64 radii r > 0)."""
        q = (self.d - 1) / r
        return self.neg_log_prob64(r), r - q, 1 + q / r


# Floor on the fitted std where the caller gives none: w ≥ log(0.5·√(2π)) ≈ 0.23 > 0 at the mode.
_MIN_STD = 0.5
_SQRT_2PI = math.sqrt(2 * math.pi)


class FittedNormPrior:
    """A Gaussian on the norm, r ~ N(loc, scale²) restricted to r > 0, for seeds whose norms do
    not follow the chi law, e.g. DDIM inversions, which sit inside the chi shell (z ≈ −5.4 on
    the demo model; QUALITY.md).

        log p(r) = −(r − loc)²/(2·scale²) − log(scale·√(2π)) − log Φ(loc/scale),   r > 0,
        w(r) = −log p(r),   w' = (r − loc)/scale²,   w'' = 1/scale².

    Why this family: the NAO metric only needs where the good norms are (the mode) and how fast
    the cost grows away from them (the width). Near its mode the chi log-density is itself a
    parabola in r with std ≈ 0.707 (its r² term), so a Gaussian on r is the chi prior's own
    shape, with location and width set free. Both must be free: inversion norms have their own
    location and their own spread, set by the images and the inversion rather than by d
    independent coordinates (12.18 ± 0.85 on the demo model, 1.6x the spread of a chi scaled to
    that mean), and a chi rescaled to the observed mean would fix the width wrongly. Two
    moments are also all that K = 1-5 norms can support. The truncation to r > 0 only changes
    the normaliser (by Φ(loc/scale), ≈ 1 for any realistic fit).

    The metric needs w > 0 everywhere, i.e. a peak density below 1: scale > 1/√(2π) ≈ 0.399.
    """

    def __init__(self, loc: float, scale: float, *, d: int):
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"d must be an int ≥ 1 (the seed dimension), got {d!r}")
        if not (math.isfinite(loc) and loc > 0):
            raise ValueError(f"loc must be a finite norm > 0, got {loc!r}")
        if not (math.isfinite(scale) and scale > 1 / _SQRT_2PI):
            raise ValueError(f"scale must be > 1/√(2π) ≈ 0.399 so that w = −log p(r) stays positive "
                             f"(the NAO metric needs w > 0), got {scale!r}; raise min_std")
        self.d = d
        self.loc, self.scale = float(loc), float(scale)
        self.mode = self.loc
        alpha = self.loc / self.scale
        log_cdf = float(torch.special.log_ndtr(torch.tensor(alpha, dtype=torch.float64)))
        self._log_norm = math.log(self.scale * _SQRT_2PI) + log_cdf
        # Moments of the normal truncated below at 0 (λ: inverse Mills ratio at −alpha).
        lam = math.exp(-0.5 * alpha * alpha - log_cdf) / _SQRT_2PI
        self.mean = self.loc + self.scale * lam
        self.std = self.scale * math.sqrt(max(1 - alpha * lam - lam * lam, 0.0))

    @classmethod
    def fit(cls, norms, *, d: int, min_std: float | None = None) -> FittedNormPrior:
        """Fit to K ≥ 1 observed seed norms: loc = their mean, scale = max(their sample std
        (ddof 1; 0 for K = 1), min_std).

        ``min_std`` floors the spread, which one to five norms cannot measure. Default: the std of
        a chi prior scaled to the observed mean, ChiPrior(d).std · loc / ChiPrior(d).mean (the
        spread the norms would have if the seeds were N(0, λ²I)), but at least 0.5 (so that
        w ≥ 0.23 > 0 at the mode). An explicit ``min_std`` is used as given.
        """
        r = torch.as_tensor(norms, dtype=torch.float64).reshape(-1)
        if r.numel() == 0 or not bool(torch.isfinite(r).all()) or not bool((r > 0).all()):
            raise ValueError(f"norms must be ≥ 1 finite positive values, got {r.tolist()[:8]}")
        loc = float(r.mean())
        spread = float(r.std(correction=1)) if r.numel() > 1 else 0.0
        if min_std is None:
            chi = ChiPrior(max(int(d), 2))
            min_std = max(chi.std * loc / chi.mean, _MIN_STD)
        elif not (math.isfinite(min_std) and min_std > 0):
            raise ValueError(f"min_std must be a finite value > 0, got {min_std!r}")
        return cls(loc, max(spread, float(min_std)), d=d)

    def __repr__(self) -> str:
        return f"FittedNormPrior(loc={self.loc:.6g}, scale={self.scale:.6g}, d={self.d})"

    def log_prob(self, r) -> torch.Tensor:
        r_in = torch.as_tensor(r)
        r64 = r_in.to(torch.float64)
        lp = -self.neg_log_prob64(r64)
        lp = torch.where(r64 > 0, lp, torch.full_like(lp, -math.inf))
        return lp.to(_float_dtype(r_in))

    def zscore(self, x: torch.Tensor) -> torch.Tensor:
        """z-score of the norms of seeds ``x`` (..., d) → (...): (|x| − mean) / std."""
        return _norm_zscore(self, x)

    def neg_log_prob64(self, r: torch.Tensor) -> torch.Tensor:
        z = (r - self.loc) / self.scale
        return 0.5 * z * z + self._log_norm

    def neg_log_prob_derivatives(self, r: torch.Tensor):
        inv_var = 1 / (self.scale * self.scale)
        return self.neg_log_prob64(r), (r - self.loc) * inv_var, torch.full_like(r, inv_var)
