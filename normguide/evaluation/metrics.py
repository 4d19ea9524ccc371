"""Image-quality metrics: pure functions on arrays and frames (no models, no IO).

Conventions: feature arrays are (N, D) floats, one row per image; a metric that is undefined for
its input (no images, too few samples) returns NaN rather than raising, so that one thin concept
does not sink a run's evaluation. Every docstring states the formula.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from PIL import Image

NAN = float("nan")

# --------------------------------------------------------------------------------------------------
# Recognisability and similarity


def recognisability(probs: np.ndarray, target: int, min_confidence: float = 0.0, abstain: np.ndarray | None = None) -> float:
    """Fraction of images recognised as the concept: most probable label is the concept's, with at
    least ``min_confidence`` probability:
    ``mean_i 1[argmax_j probs[i, j] == target and probs[i, target] >= min_confidence]``.

    ``probs``: (N, C) probabilities over a set of candidate labels (which set is the caller's and
    the judge's choice: the digits judge uses all 10 digits, CLIP the run's concept names);
    ``target``: the concept's column. ``min_confidence`` (default 0: plain argmax) lets a judge that
    spreads its probability over all classes for a non-member ("not a digit") say so: the demo
    digit classifier gives noise near-uniform probabilities with an arbitrary but fixed argmax, so
    its judge uses 0.5. NaN for N = 0 or C < 2 (an argmax over one label is always "right" and says
    nothing). Ties go to the lowest column. ``abstain`` (N,) bool marks images the judge's
    answer does not count for (:func:`at_similarity_floor`: features the judge cannot place):
    they are never recognised.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probs must be (N, C), got shape {probs.shape}")
    n, c = probs.shape
    if not 0 <= target < c:
        raise ValueError(f"target {target} out of range for {c} labels")
    if n == 0 or c < 2:
        return NAN
    hit = (np.argmax(probs, axis=1) == target) & (probs[:, target] >= min_confidence)
    if abstain is not None:
        hit &= ~np.asarray(abstain, dtype=bool)
    return float(np.mean(hit))


#: Per-image mean cosine similarity to the references at or below which an image is "at the
#: floor": its features say nothing about the concept (the demo classifier's ReLU features are
#: all zero for noise and blank images; real digits score ~0.97, CLIP photos > 0.2).
SIMILARITY_FLOOR = 0.05
#: Feature vectors shorter than this (relative to the references' median length) count as zero.
_ZERO_FEATURES = 1e-6


def image_similarities(features: np.ndarray, reference_features: np.ndarray) -> np.ndarray:
    """(N,) mean cosine similarity of each image to the references (0 for zero features)."""
    x, y = _as_2d(features), _as_2d(reference_features)
    if x.shape[0] == 0 or y.shape[0] == 0:
        return np.zeros(x.shape[0])
    _same_dim(x, y)
    return (_unit(x) @ _unit(y).T).mean(axis=1)


def at_similarity_floor(features: np.ndarray, reference_features: np.ndarray,
                        floor: float = SIMILARITY_FLOOR) -> np.ndarray:
    """(N,) bool: images whose features are (near) zero, or whose mean cosine similarity to the
    references is at most ``floor``. A judge's class probabilities for such an image come from
    its biases, not from the image (a classifier can be "confident" about grey noise), so the
    evaluation abstains on them ("none of these") instead of counting them."""
    x, y = _as_2d(features), _as_2d(reference_features)
    if x.shape[0] == 0:
        return np.zeros(0, dtype=bool)
    if y.shape[0] == 0:
        return np.zeros(x.shape[0], dtype=bool)
    scale = float(np.median(np.linalg.norm(y, axis=1))) or 1.0
    zero = np.linalg.norm(x, axis=1) <= _ZERO_FEATURES * scale
    return zero | (image_similarities(x, y) <= floor)


def judge_confidence(probs: np.ndarray) -> float:
    """Mean of the judge's top probability per image (how sure it is of its answer, whatever the
    answer); NaN for no images."""
    probs = np.asarray(probs, dtype=np.float64)
    return float(probs.max(axis=1).mean()) if probs.size else NAN


def none_of_these(probs: np.ndarray, min_confidence: float, abstain: np.ndarray | None = None) -> float:
    """Fraction of images the judge abstains on: its top probability is below ``min_confidence``
    (it names no label) or the image is at the similarity floor (``abstain``); NaN for none."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[0] == 0:
        return NAN
    none = probs.max(axis=1) < min_confidence
    if abstain is not None:
        none |= np.asarray(abstain, dtype=bool)
    return float(np.mean(none))


def _unit(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length for the cosine kernel. An all-zero row (what a ReLU feature model
    gives an input with none of its features, e.g. noise) has no direction; it is mapped to a unit
    vector along one extra axis, so that zero rows are identical to each other (cos = 1) and
    orthogonal to every other row (cos = 0)."""
    x = _as_2d(x)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    zero = norms[:, 0] == 0.0
    if zero.any():
        x = np.concatenate([x, zero[:, None].astype(np.float64)], axis=1)
        norms = np.where(zero[:, None], 1.0, norms)
    elif x.shape[0]:
        x = np.concatenate([x, np.zeros((x.shape[0], 1))], axis=1)
    else:
        x = np.zeros((0, x.shape[1] + 1))
    return x / norms


def reference_similarity(features: np.ndarray, reference_features: np.ndarray) -> float:
    """Mean cosine similarity of every image to every reference:
    ``mean_{i,r} <x_i, y_r> / (|x_i| |y_r|)`` (1: same direction as all references; ~0 unrelated).
    An all-zero feature vector has cosine 0 with non-zero ones and 1 with other zero vectors.

    NaN when either set is empty.
    """
    x, y = _as_2d(features), _as_2d(reference_features)
    if x.shape[0] == 0 or y.shape[0] == 0:
        return NAN
    _same_dim(x, y)
    x, y = _unit(x), _unit(y)
    return float(np.mean(x @ y.T))


# --------------------------------------------------------------------------------------------------
# Precision, recall, density, coverage


def _as_2d(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1 and x.size == 0:
        return x.reshape(0, 0)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {x.shape}")
    return x


def _same_dim(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")


def _distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from scipy.spatial.distance import cdist

    # cdist is exact (identical rows give exactly 0), unlike the |a|²+|b|²-2ab trick.
    return cdist(a, b, metric="euclidean")


#: Rows of the distance matrix held at a time by :func:`_knn_radii` (memory: block x N floats).
KNN_BLOCK = 512


def _knn_radii(x: np.ndarray, k: int, block: int = KNN_BLOCK) -> np.ndarray:
    """Distance from each row to its k-th nearest other row (itself excluded), ``block`` rows of
    the N x N distance matrix at a time (2,000 images of one concept and method would otherwise
    hold 2 x 32 MB: the matrix and its sorted copy). The same values as sorting the whole matrix:
    each distance is computed alone and the k-th smallest of a row does not depend on the rest."""
    n = x.shape[0]
    out = np.empty(n)
    for start in range(0, n, block):
        d = _distances(x[start : start + block], x)
        rows = np.arange(d.shape[0])
        d[rows, rows + start] = -1.0  # self sorts first whatever duplicates exist
        out[start : start + block] = np.partition(d, k, axis=1)[:, k]
    return out


def prdc(real: np.ndarray, fake: np.ndarray, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` (Naeem et al. 2020,
    "Reliable fidelity and diversity metrics for generative models"), with k-NN balls.

    With ``r_k(x)`` the distance from x to its k-th nearest neighbour in its own set (itself
    excluded) and ``B(x, r) = {y : |y - x| <= r}`` (closed balls, as in Kynkäänniemi et al. 2019),
    for real X_1..X_N and fake Y_1..Y_M:

    - precision = (1/M) Σ_j 1[∃ i: Y_j ∈ B(X_i, r_k(X_i))]   fakes inside the real manifold
    - recall    = (1/N) Σ_i 1[∃ j: X_i ∈ B(Y_j, r_k(Y_j))]   reals inside the fake manifold
    - density   = (1/(k M)) Σ_j Σ_i 1[Y_j ∈ B(X_i, r_k(X_i))]  how many real balls hold each
      fake, in units of k (1 on average when fake ~ real; can exceed 1)
    - coverage  = (1/N) Σ_i 1[∃ j: Y_j ∈ B(X_i, r_k(X_i))]   reals with a fake nearby

    k is clamped to the sample sizes: the real radii use ``k_real = min(k, N - 1)`` (density divides
    by k_real), the fake radii (recall) ``k_fake = min(k, M - 1)``. With few references (e.g. 5) the
    real balls come from k = 4 neighbours. Undefined quantities are NaN: everything when either set
    is empty; precision, density and coverage when N < 2; recall when M < 2. Euclidean distances in
    float64. Matches the reference implementation (the ``prdc`` package) up to its open balls.

    Returns a dict with precision, recall, density, coverage and the k values used (k_real, k_fake).
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    real, fake = _as_2d(real), _as_2d(fake)
    n, m = real.shape[0], fake.shape[0]
    out = {"precision": NAN, "recall": NAN, "density": NAN, "coverage": NAN, "k_real": 0, "k_fake": 0}
    if n == 0 or m == 0:
        return out
    _same_dim(real, fake)
    d_rf = _distances(real, fake)  # (N, M)
    if n >= 2:
        k_real = min(k, n - 1)
        inside = d_rf <= _knn_radii(real, k_real)[:, None]  # fake j in real ball i
        out["precision"] = float(inside.any(axis=0).mean())
        out["density"] = float(inside.sum(axis=0).mean() / k_real)
        out["coverage"] = float(inside.any(axis=1).mean())
        out["k_real"] = k_real
    if m >= 2:
        k_fake = min(k, m - 1)
        out["recall"] = float((d_rf <= _knn_radii(fake, k_fake)[None, :]).any(axis=1).mean())
        out["k_fake"] = k_fake
    return out


# --------------------------------------------------------------------------------------------------
# Diversity


def vendi_score(features: np.ndarray) -> float:
    """Vendi score (Friedman & Dieng 2023) with the cosine kernel: the effective number of distinct
    images, ``exp(-Σ_i λ_i log λ_i)`` with λ the eigenvalues of ``K / n``, ``K_ij = cos(x_i, x_j)``
    (so Σλ = 1). n identical images give 1, n mutually orthogonal ones give n. All-zero feature
    vectors count as one shared point (cos 1 with each other, 0 with the rest).

    Why Vendi as the diversity metric: it counts modes (k near-copies of one image count ~1, not k),
    needs no reference set, is scale-free in the cosine kernel, and is read as a number of images.
    It grows with n, so compare methods at equal image counts (the benchmark gives every method the
    same budget). Same formula as the ``vendi_score`` package's ``score_X``, which is cross-checked
    in the tests; that package (0.0.3, source-only, a DeprecationWarning from SciPy on every call)
    is not a runtime dependency. Computed from the D x D dual when n > D (same non-zero spectrum).
    NaN for n = 0.
    """
    x = _unit(_as_2d(features))
    n = x.shape[0]
    if n == 0:
        return NAN
    gram = (x.T @ x) if n > x.shape[1] else (x @ x.T)
    lam = np.linalg.eigvalsh(gram / n)
    lam = lam[lam > 1e-12]
    return float(math.exp(-np.sum(lam * np.log(lam))))


def mean_pairwise_distance(features: np.ndarray) -> float:
    """Mean cosine distance over distinct pairs: ``2/(n(n-1)) Σ_{i<j} (1 - cos(x_i, x_j))``
    (all-zero feature vectors: as in :func:`vendi_score`).

    A secondary diversity number: simple and independent of n, but blind to mode collapse (two tight
    clusters far apart score high), which is why Vendi is the headline. NaN for n < 2.
    """
    x = _unit(_as_2d(features))
    n = x.shape[0]
    if n < 2:
        return NAN
    s = x.sum(axis=0)
    # Σ_{i≠j} (1 - cos_ij) = n(n-1) - (|Σ_i x_i|² - Σ_i |x_i|²), with |x_i| = 1
    return float(1.0 - (s @ s - n) / (n * (n - 1)))


# --------------------------------------------------------------------------------------------------
# Train on synthetic, test on real

TSTR_PIXELS = 16


def pixel_features(images: Sequence[Image.Image], size: int = TSTR_PIXELS) -> np.ndarray:
    """(N, size²) grey pixels in [0, 1]: each image converted to grey ("L") and box-downsampled to
    size x size (a common size whatever resolution the generator or the real set has)."""
    from PIL import Image as PILImage

    if len(images) == 0:
        return np.zeros((0, size * size))
    rows = [
        np.asarray(im.convert("L").resize((size, size), PILImage.Resampling.BOX), dtype=np.float64).ravel() / 255.0
        for im in images
    ]
    return np.stack(rows)


def tstr_accuracy(
    train_features: np.ndarray,
    train_labels: Sequence,
    test_features: np.ndarray,
    test_labels: Sequence,
    *,
    C: float = 0.1,
) -> tuple[float, dict]:
    """Train on synthetic, test on real: fit a classifier on the synthetic features/labels only, then
    return (overall accuracy, {label: accuracy}) on the real test set.

    Classifier: standardised features + multinomial logistic regression (scikit-learn, lbfgs,
    L2 with C = 0.1, max_iter 2000): convex, so the fit is unique and deterministic. Per label:
    accuracy on that label's real test images (its recall); overall: the mean of the per-label
    accuracies (balanced accuracy, so that a long-tailed test set does not let common concepts
    dominate; chance = 1 / number of labels). Labels present in the test set but not in training
    score 0 (the classifier cannot predict them). NaN overall and per label when the training set
    has fewer than 2 distinct labels (nothing to discriminate) or the test set is empty.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_labels = np.asarray(list(train_labels), dtype=object)
    test_labels = np.asarray(list(test_labels), dtype=object)
    test_classes = list(dict.fromkeys(test_labels.tolist()))
    nan_result = (NAN, {c: NAN for c in test_classes})
    if len(set(train_labels.tolist())) < 2 or len(test_labels) == 0:
        return nan_result
    xtr, xte = _as_2d(train_features), _as_2d(test_features)
    _same_dim(xtr, xte)
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=0))
    # string labels keep the class order independent of label types
    clf.fit(xtr, train_labels.astype(str))
    pred = clf.predict(xte)
    per = {c: float(np.mean(pred[test_labels == c] == str(c))) for c in test_classes}
    return float(np.mean(list(per.values()))), per


# --------------------------------------------------------------------------------------------------
# Seed statistics

SEED_COLUMNS = ("seed_zscore", "seed_norm", "reconstruction_error")


def seed_statistics(manifest: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Per group (default: per method), mean and std (sample, ddof=1) of ``seed_zscore``,
    ``seed_norm`` and ``reconstruction_error`` over the manifest rows, missing values skipped
    (random seeds have no reconstruction error). Columns ``<col>_mean``, ``<col>_std``, indexed by
    ``by``; a column absent from the manifest gives NaN."""
    by = list(by)
    frame = manifest[by].copy()
    for col in SEED_COLUMNS:
        frame[col] = pd.to_numeric(manifest[col], errors="coerce") if col in manifest else np.nan
    g = frame.groupby(by, sort=False, dropna=False)
    out = pd.DataFrame(index=g.size().index)
    for col in SEED_COLUMNS:
        out[f"{col}_mean"] = g[col].mean().astype(float)
        out[f"{col}_std"] = g[col].std(ddof=1).astype(float)
    return out
