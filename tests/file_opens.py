"""Count how often a file is opened, whatever opens it: a ``sys.audit`` hook on the ``open``
event (raised by ``open``, ``io.open`` and ``os.open``), so the real storage code runs
unchanged and every read of the file is seen, through any code path.

    with counting_opens(table_path) as opens:
        run_dataset(cfg)
    assert opens() == 1
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_COUNTS: dict[str, int] = {}
_INSTALLED = False


def _hook(event: str, args: tuple) -> None:
    if not _COUNTS or event != "open" or not args or not isinstance(args[0], (str, bytes, os.PathLike)):
        return
    path = os.path.abspath(os.fsdecode(args[0]))
    if path in _COUNTS:
        _COUNTS[path] += 1


@contextmanager
def counting_opens(path: str | os.PathLike) -> Iterator[Callable[[], int]]:
    """Yield a function that returns how often ``path`` was opened inside the block (so far, or
    in all once the block is left)."""
    global _INSTALLED
    if not _INSTALLED:  # an audit hook cannot be removed: one for the session, idle outside blocks
        sys.addaudithook(_hook)
        _INSTALLED = True
    key = os.path.abspath(os.fspath(path))
    _COUNTS[key] = 0
    final: list[int] = []
    try:
        yield lambda: final[0] if final else _COUNTS[key]
    finally:
        final.append(_COUNTS.pop(key))
