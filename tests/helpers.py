"""Helpers shared by the test folders (import as ``tests.helpers``; pytest runs from the root)."""

import random
import signal
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


def as_from_a_terminal() -> None:
    """``preexec_fn`` for a CLI process a test sends Ctrl-C (SIGINT): SIGINT at its default, as for
    a command a user starts in a terminal. A process started in the background of a
    non-interactive shell (``cmd &`` in a script, as CI jobs or nohup may run pytest) inherits
    SIGINT *ignored*, and Python then installs no KeyboardInterrupt handler, so the child would
    never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
