"""Device and dtype choice, and the per-device lock that serialises model steps across threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

_LOCKS_GUARD = threading.Lock()
_DEVICE_LOCKS: dict[str, threading.Lock] = {}


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` -> ``cuda`` if available, else ``cpu``; anything else as torch understands it.

    A bare ``"cuda"`` becomes ``cuda:<current index>`` so that locks and caches see one name per GPU.
    """
    if isinstance(device, torch.device):
        resolved = device
    elif device == "auto":
        resolved = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            resolved = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:<n>', got {device!r}") from err
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asks for CUDA, but torch sees no CUDA device")
        if resolved.index is None:
            resolved = torch.device("cuda", torch.cuda.current_device())
    return resolved


def resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    """``"float32"`` anywhere; ``"float16"`` / ``"bfloat16"`` only on CUDA (CPU half precision is slow
    and, for these models, not numerically trustworthy)."""
    if isinstance(dtype, torch.dtype):
        name = str(dtype).removeprefix("torch.")
    else:
        name = dtype
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    if name != "float32" and device.type != "cuda":
        raise ValueError(f"dtype {name!r} needs a CUDA device; got device {str(device)!r} (use float32)")
    return DTYPES[name]


def device_lock(device: torch.device | str) -> threading.Lock:
    """The one lock for ``device`` (e.g. ``cuda:0``, ``cpu``), created on first use."""
    key = str(resolve_device(device))
    with _LOCKS_GUARD:
        lock = _DEVICE_LOCKS.get(key)
        if lock is None:
            lock = _DEVICE_LOCKS[key] = threading.Lock()
        return lock


@contextmanager
def exclusive_device(device: torch.device | str) -> Iterator[None]:
    """Hold ``device``'s lock: threads that share a device run their model steps one after another.

    Held per batch, never across a ``yield`` to the caller, so a slow consumer of generated images
    does not block other threads.
    """
    with device_lock(device):
        yield
