"""The chi norm prior of Gaussian seeds."""

from __future__ import annotations

import math

import torch


class ChiPrior:
    """Norm prior of z ~ N(0, I_d): r = |z| follows a chi distribution with d degrees of freedom.

    log p(r) = (d−1)·log r − r²/2 − ((d/2 − 1)·log 2 + lgamma(d/2)),   r > 0.

    Near the mode m = √(d−1) the terms are ~1e5 and cancel to ~1, so ``log_prob`` uses the
    equivalent, cancellation-free form (x = r/m − 1):

        log p(r) = log p(m) − (d−1)·(x − log1p(x) + x²/2).

    It is computed in float64 and returned in r's floating dtype; r ≤ 0 gives −inf.
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
        dtype = r_in.dtype if r_in.dtype.is_floating_point else torch.get_default_dtype()
        r64 = r_in.to(torch.float64)
        x = r64 / self.mode - 1.0
        positive = r64 > 0
        x_safe = torch.where(positive, x, torch.zeros_like(x))
        lp = self._log_p_mode - (self.d - 1) * (x_safe - torch.log1p(x_safe) + 0.5 * x_safe * x_safe)
        lp = torch.where(positive, lp, torch.full_like(lp, -math.inf))
        return lp.to(dtype)

    def zscore(self, x: torch.Tensor) -> torch.Tensor:
        """z-score of the norms of seeds ``x`` (..., d) → (...): (|x| − mean) / std."""
        if x.shape[-1] != self.d:
            raise ValueError(f"x must have last dimension d={self.d}, got shape {tuple(x.shape)}")
        dtype = x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()
        r = torch.linalg.vector_norm(x.to(torch.float64), dim=-1)
        return ((r - self.mean) / self.std).to(dtype)

    def neg_log_prob64(self, r: torch.Tensor) -> torch.Tensor:
        """w = −log p(r) for float64 radii r > 0, without ``log_prob``'s conversions and masks
        (the solvers' inner loops call it on radii they keep positive)."""
        x = r / self.mode - 1.0
        return (self.d - 1) * (x - torch.log1p(x) + 0.5 * x * x) - self._log_p_mode

    def neg_log_prob_derivatives(self, r: torch.Tensor):
        """w = −log p(r) and its first two derivatives, w' = r − (d−1)/r, w'' = 1 + (d−1)/r²
        (float64 radii r > 0; used by the Newton solver in place of autograd)."""
        q = (self.d - 1) / r
        return self.neg_log_prob64(r), r - q, 1 + q / r
