"""A model's seed shape (channels, height, width) without loading its weights where possible."""

from __future__ import annotations

import json
from pathlib import Path


def seed_shape(model: str) -> tuple[int, int, int]:
    """The seed shape of ``model`` ('demo', a local pipeline directory, or a hub id): from a local
    pipeline's ``unet/config.json`` when there is one (no weights loaded, no diffusers import;
    the shipped demo's too), else from loading the model."""
    from normguide.diffusion.loading import trained_demo_dir

    path = trained_demo_dir() if model == "demo" else Path(model)
    unet = path / "unet" / "config.json"
    if unet.is_file():
        conf = json.loads(unet.read_text())
        size = conf.get("sample_size", 64)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        return (int(conf.get("in_channels", 4)), int(h), int(w))
    from normguide.diffusion import get_pipeline

    return tuple(get_pipeline(model, device="cpu", dtype="float32").seed_shape)
