"""Gauss–Legendre quadrature on [0, 1], the one integration rule of the energies and the planar
solver (below both, so neither imports the other for it)."""

from __future__ import annotations

import functools

import numpy as np
import torch


@functools.lru_cache(maxsize=16)
def _gauss_legendre_np(n: int):
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1) / 2, w / 2  # nodes and weights on [0, 1]


@functools.lru_cache(maxsize=64)
def _gauss_legendre_torch(n: int, dtype, device):
    s, w = _gauss_legendre_np(n)
    return torch.as_tensor(s, dtype=dtype, device=device), torch.as_tensor(w, dtype=dtype, device=device)


def gauss_legendre(n: int, *, dtype=torch.float64, device=None):
    """Gauss–Legendre nodes s_q and weights ω_q on [0, 1] (Σ ω_q = 1). Cached: the solvers call
    this in their inner loops, and building the tensors costs more than using them. The returned
    tensors are shared; do not modify them in place."""
    return _gauss_legendre_torch(n, dtype, None if device is None else torch.device(device))
