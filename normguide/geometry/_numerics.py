"""Numerical conventions of the geometry layer: one table of dtype-aware tolerances and the
input checks every public function shares.

All solvers compute in float64 (the chi log-density near its mode is a difference of numbers
~1e5 that cancel to ~0.6) and return the caller's floating dtype.
"""

from __future__ import annotations

import math

import torch

# Tolerances of the geometry layer. Every solver works in float64 on the inputs' exact values
# (a bfloat16 or float16 seed is an exact float64 number), so none depends on the input dtype.
#   antipodal: |b_perp| / |b| below which the plane of (a, b) is numerically undefined and a
#              deterministic fallback plane is used (see ``nao.geodesic_plane``).
EPS = {"antipodal": 1e-12}

COMPUTE_DTYPE = torch.float64


def lift_dtype(dtype: torch.dtype) -> torch.dtype:
    """dtype of the final d-dimensional products (coefficients @ basis): float64 for float64
    outputs, float32 otherwise. Half-precision outputs are cast once, after the product;
    rounding the basis and coefficients to bfloat16 first moved interior norms by up to 0.9 std."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def out_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """Floating result dtype of the inputs (integers promote to the default float dtype)."""
    dt = tensors[0].dtype
    for x in tensors[1:]:
        dt = torch.promote_types(dt, x.dtype)
    return dt if dt.is_floating_point else torch.get_default_dtype()


def check_seeds(name: str, x, *, min_dim: int = 1, nonzero: bool = True) -> torch.Tensor:
    """Raise ``ValueError`` naming ``name`` unless ``x`` is a finite tensor of rank ≥ min_dim
    (and, if ``nonzero``, every vector in its last dimension has a non-zero norm)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_dim or x.shape[-1] == 0:
        raise ValueError(f"{name} must have shape (..., d) with at least {min_dim} dims and d ≥ 1, "
                         f"got shape {tuple(x.shape)}")
    if x.is_complex():
        raise ValueError(f"{name} must be real, got dtype {x.dtype}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} must be finite, got non-finite values (shape {tuple(x.shape)})")
    if nonzero and x.numel() > 0:
        zero = (x == 0).all(dim=-1)
        if bool(zero.any()):
            idx = tuple(int(i) for i in zero.nonzero()[0])
            raise ValueError(f"{name} must have non-zero norm; the seed at batch index {idx} "
                             f"of shape {tuple(x.shape)} is all zeros")
    return x


def check_same_dim(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor) -> torch.Size:
    """Seeds must share the last dimension d and have broadcastable batch dimensions."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"{name_a} and {name_b} must have the same last dimension d, got shapes "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    try:
        return torch.broadcast_shapes(a.shape[:-1], b.shape[:-1])
    except RuntimeError:
        raise ValueError(f"batch shapes of {name_a} {tuple(a.shape)} and {name_b} "
                         f"{tuple(b.shape)} do not broadcast") from None


def check_t(t) -> torch.Tensor:
    """``t`` must be a finite 1-D tensor of values in [0, 1]."""
    if not isinstance(t, torch.Tensor):
        t = torch.as_tensor(t, dtype=torch.float64)
    if t.dim() != 1:
        raise ValueError(f"t must be a 1-D tensor of fractions in [0, 1], got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()) or (t.numel() and (t.min() < 0 or t.max() > 1)):
        raise ValueError(f"t must hold finite values in [0, 1], got {t.tolist()[:8]}")
    return t


def check_prior(prior, d: int):
    """``prior=None`` means ``ChiPrior(d)``; otherwise it must implement ``NormPrior`` (prior.py)
    with a positive metric factor at its mode, w(mode) = −log p(mode) > 0."""
    from .prior import ChiPrior, NormPrior

    if prior is None:
        return ChiPrior(d)
    if not isinstance(prior, NormPrior):
        missing = [m for m in ("mode", "mean", "std", "log_prob", "neg_log_prob64", "neg_log_prob_derivatives",
                               "zscore") if not hasattr(prior, m)]
        raise ValueError(f"prior must implement the NormPrior protocol (normguide.geometry.NormPrior); "
                         f"{type(prior).__name__} lacks {', '.join(missing)}")
    mode = float(prior.mode)
    if not (math.isfinite(mode) and mode > 0):
        raise ValueError(f"prior.mode must be a finite norm > 0, got {prior.mode!r}")
    w_mode = float(prior.neg_log_prob64(torch.tensor([mode], dtype=torch.float64))[0])
    if not w_mode > 0:
        raise ValueError(f"the NAO metric needs w = −log p(r) > 0 everywhere, but this prior has "
                         f"w(mode) = {w_mode:.4g} (its density exceeds 1 at the mode; widen it)")
    return prior
