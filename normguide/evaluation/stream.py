"""Images a chunk at a time: what lets evaluation's memory stay flat in the number of images.

:func:`~normguide.evaluation.evaluate` reads its images through :func:`chunks`, ``chunk_size``
at a time, and keeps only what the metrics need from each chunk (judge features, class
probabilities, 16 x 16 grey pixels), never the images. Given a :class:`LazyImages` (each image
decoded when it is read), a run's images are then never all in memory: the pipeline's
evaluation step passes its images and references that way.

:data:`EVAL_CHUNK` (256) is a multiple of the built-in judges' own batch sizes (the digit
classifier's 256, CLIP's 32), so the judge sees the same batches whatever the chunking and the
scores are the same bytes as one call over all images.
"""

from __future__ import annotations

import bisect

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from PIL import Image

#: Images decoded and scored at a time (a multiple of the built-in judges' batch sizes).
EVAL_CHUNK = 256


class LazyImages(Sequence):
    """A read-only sequence of images, each made when it is read: ``load(item)`` for each of
    ``items`` (e.g. storage keys and a function that reads and decodes one). Nothing is cached,
    so reading it twice loads twice."""

    def __init__(self, items: Sequence[Any], load: Callable[[Any], Image.Image]) -> None:
        self._items = list(items)
        self._load = load

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return LazyImages(self._items[index], self._load)
        return self._load(self._items[index])

    def __repr__(self) -> str:
        return f"LazyImages({len(self)} images)"


class Chained(Sequence):
    """Several sequences read as one, without copying (or loading) any of them."""

    def __init__(self, *parts: Sequence) -> None:
        self._parts = [p for p in parts if len(p)]
        self._starts, n = [], 0
        for p in self._parts:
            self._starts.append(n)
            n += len(p)
        self._len = n

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(self._len))]
        if index < 0:
            index += self._len
        if not 0 <= index < self._len:
            raise IndexError(index)
        k = bisect.bisect_right(self._starts, index) - 1
        return self._parts[k][index - self._starts[k]]


def chunks(images: Sequence, size: int = EVAL_CHUNK) -> Iterator[list]:
    """``images`` as consecutive lists of at most ``size`` items (the last may be shorter); only
    one list is alive at a time when the caller drops each before the next."""
    if size < 1:
        raise ValueError(f"chunk size must be >= 1, got {size}")
    for start in range(0, len(images), size):
        yield [images[i] for i in range(start, min(start + size, len(images)))]
