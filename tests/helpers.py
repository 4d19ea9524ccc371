"""Helpers shared by the test folders (import as ``tests.helpers``; pytest runs from the root)."""

import random
from pathlib import Path

from PIL import Image


def make_reference(path: Path, seed: int, size=(96, 80)) -> Path:
    """A small reference PNG of coloured rectangles, the same for the same seed in every process."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(6):
        x0, y0 = rng.randrange(size[0] - 10), rng.randrange(size[1] - 10)
        box = (x0, y0, x0 + 10 + rng.randrange(30), y0 + 10 + rng.randrange(30))
        img.paste(tuple(rng.randrange(256) for _ in range(3)), box)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path
