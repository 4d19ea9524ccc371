"""The demo model's data: scikit-learn's bundled handwritten digits, split once, deterministically.

``sklearn.datasets.load_digits`` holds 1,797 real 8 x 8 grey images (values 0..16) of the digits
0-9, about 180 per class, bundled with scikit-learn (no download). Everything that trains or judges
the demo model takes its images from here, so that no held-out image is ever trained on.

Splits (``load_split(name)``), all fixed by ``SPLIT_SEED`` (0):

- ``"heldout"``: per class, ``round(HELDOUT_FRACTION * n_c)`` images (25 %, 450 in all) drawn by a
  seeded permutation. No training ever sees them. It is the disjoint union of
  - ``"reference"``: the first ``REFERENCE_PER_CLASS`` (10) held-out images of each class, in split
    order: the shipped example's reference images (what DDIM inversion starts from);
  - ``"test"``: the rest (about 35 per class, 350 in all): the evaluation's real test images.
- ``"judge"``: every non-held-out image (1,347): the training set of the digit classifier that
  judges generated images (``normguide.demo.classifier``).
- ``"generative"``: the diffusion model's training set, long-tailed on purpose: the digits in
  ``RARE_CLASSES`` (2, 5 and 8) keep only their first ``RARE_TRAIN_PER_CLASS`` (8) judge images, the
  other seven digits keep all of theirs (about 134 each). Why these three: they are spread over
  the range and each has look-alikes (2/3/7, 5/6/9/3, 8/3/9/0), so a model that saw little of them
  plausibly drifts to a neighbour, which is what the paper's long tail is about.

Images: ``digit_to_image`` turns an 8 x 8 digit into the model's picture: a WHITE digit on a BLACK
background (value v -> grey 255·v/16, the MNIST convention), bicubic-upsampled to ``RESOLUTION``
(32) px, as RGB (three equal channels).

API (everything else in this module is private):

    CLASS_NAMES                      ("zero", ..., "nine"); label i is digit i
    RARE_CLASSES, COMMON_CLASSES     (2, 5, 8) and the other seven labels
    RESOLUTION                       32 (px, square)
    SPLITS                           ("generative", "judge", "heldout", "reference", "test")
    prompt_for(label) -> str         "a handwritten digit seven"
    digit_to_image(digit, resolution=RESOLUTION) -> PIL.Image (RGB)
    load_split(name) -> DigitSplit   .digits (N,8,8) float 0..16, .labels (N,) int64,
                                     .indices (N,) rows of load_digits; len(); .images() -> PIL list;
                                     .tensor() -> (N,3,R,R) float32 in [-1,1]; .of_class(label)
    reference_images(label, n=None) -> list[PIL.Image]  held-out reference images of one digit
    split_fingerprint() -> str       sha256 over every split's indices (recorded with the weights)
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch
    from PIL import Image

CLASS_NAMES: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
RARE_CLASSES: tuple[int, ...] = (2, 5, 8)
COMMON_CLASSES: tuple[int, ...] = tuple(c for c in range(10) if c not in RARE_CLASSES)
RARE_TRAIN_PER_CLASS = 8
HELDOUT_FRACTION = 0.25
REFERENCE_PER_CLASS = 10
SPLIT_SEED = 0
RESOLUTION = 32
SPLITS: tuple[str, ...] = ("generative", "judge", "heldout", "reference", "test")


def prompt_for(label: int) -> str:
    """The training prompt of a digit: ``prompt_for(7) == "a handwritten digit seven"``."""
    return f"a handwritten digit {CLASS_NAMES[_check_label(label)]}"


def _check_label(label) -> int:
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= int(label) <= 9:
        raise ValueError(f"label must be an int in 0..9, got {label!r}")
    return int(label)


def digit_to_image(digit: np.ndarray, resolution: int = RESOLUTION) -> Image.Image:
    """An 8 x 8 digit (values 0..16) as a white-on-black RGB PIL image, bicubic-upsampled to
    ``resolution`` px."""
    from PIL import Image as PILImage

    arr = np.asarray(digit, dtype=np.float64)
    if arr.shape != (8, 8):
        raise ValueError(f"digit must have shape (8, 8), got {arr.shape}")
    grey = np.clip(np.rint(arr * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    image = PILImage.fromarray(grey, "L")
    if resolution != 8:
        image = image.resize((resolution, resolution), PILImage.Resampling.BICUBIC)
    return image.convert("RGB")


@dataclass(frozen=True)
class DigitSplit:
    """One split: ``digits`` (N, 8, 8) float64 in 0..16, ``labels`` (N,) int64, ``indices`` (N,)
    rows of ``load_digits()``; in split order (class by class, each in its seeded order)."""

    name: str
    digits: np.ndarray
    labels: np.ndarray
    indices: np.ndarray

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def images(self, resolution: int = RESOLUTION) -> list[Image.Image]:
        """The digits as RGB PIL images (``digit_to_image``)."""
        return [digit_to_image(d, resolution) for d in self.digits]

    def tensor(self, resolution: int = RESOLUTION) -> torch.Tensor:
        """(N, 3, R, R) float32 in [-1, 1], the pixels of ``images()`` (what the VAE sees)."""
        import torch

        if len(self) == 0:
            return torch.zeros(0, 3, resolution, resolution)
        arrays = np.stack([np.asarray(im, dtype=np.float32) for im in self.images(resolution)])
        return torch.from_numpy(arrays).permute(0, 3, 1, 2).contiguous() / 127.5 - 1.0

    def of_class(self, label: int) -> DigitSplit:
        """The rows of one digit, in split order."""
        keep = self.labels == _check_label(label)
        return DigitSplit(self.name, self.digits[keep], self.labels[keep], self.indices[keep])


@functools.lru_cache(maxsize=1)
def _dataset() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    digits, labels = data.images.astype(np.float64), data.target.astype(np.int64)
    digits.setflags(write=False)
    labels.setflags(write=False)
    return digits, labels


@functools.lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    """Row indices of every split. Per class: a seeded permutation of its rows (dataset order); the
    first 25 % are held out (the first 10 of those are references), the rest train the judge."""
    _, labels = _dataset()
    rng = np.random.default_rng(SPLIT_SEED)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for c in range(10):
        rows = np.flatnonzero(labels == c)
        rows = rows[rng.permutation(rows.size)]
        n_held = round(HELDOUT_FRACTION * rows.size)
        held, train = rows[:n_held], rows[n_held:]
        parts["heldout"].append(held)
        parts["reference"].append(held[:REFERENCE_PER_CLASS])
        parts["test"].append(held[REFERENCE_PER_CLASS:])
        parts["judge"].append(train)
        parts["generative"].append(train[:RARE_TRAIN_PER_CLASS] if c in RARE_CLASSES else train)
    out = {}
    for name, pieces in parts.items():
        idx = np.concatenate(pieces).astype(np.int64)
        idx.setflags(write=False)
        out[name] = idx
    return out


def load_split(name: str) -> DigitSplit:
    """One of ``SPLITS`` (see the module docstring)."""
    if name not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {name!r}")
    digits, labels = _dataset()
    idx = _split_indices()[name]
    return DigitSplit(name, digits[idx], labels[idx], idx)


def reference_images(label: int, n: int | None = None, resolution: int = RESOLUTION) -> list[Image.Image]:
    """The first ``n`` (default all 10) held-out reference images of one digit, as RGB PIL images."""
    refs = load_split("reference").of_class(label)
    if n is not None:
        if n < 0 or n > len(refs):
            raise ValueError(f"n must be in 0..{len(refs)}, got {n}")
        refs = DigitSplit(refs.name, refs.digits[:n], refs.labels[:n], refs.indices[:n])
    return refs.images(resolution)


def split_fingerprint() -> str:
    """16 hex digits of sha256 over every split's indices: equal to the one recorded with the shipped
    weights iff this machine splits the data as the training run did."""
    digest = hashlib.sha256()
    for name, idx in sorted(_split_indices().items()):
        digest.update(name.encode() + b"\0" + np.asarray(idx, dtype="<i8").tobytes())
    return digest.hexdigest()[:16]
