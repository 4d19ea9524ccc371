"""Long-tail augmentation: does a method's synthetic data help a classifier of the real, long-tailed
data on its rare classes? The protocol of the few-shot / long-tail papers (DA-Fusion, Diff-II, the
NAO paper's long-tail experiment), at a size that runs on a CPU:

- train: the real, long-tailed training set (common classes plentiful, rare classes few), plus
  the synthetic images of the rare classes (labelled as their class);
- test: a balanced held-out real test set;
- report, per training set and classifier: **rare-class accuracy** (mean recall over the rare
  classes) and **overall accuracy** (balanced: mean recall over all classes);
- baselines: ``real only``; ``real + references`` (the few real images the synthetic data came
  from); ``real, re-weighted`` (class weights inversely proportional to class counts: what a
  practitioner does without any generator); ``real + extra real`` (as many more REAL rare images
  as the synthetic set adds: the ceiling); each method as ``real + <method>`` and
  ``real + references + <method>``;
- two classifiers: ``linear`` (logistic regression, C = 0.1) and ``svm`` (an RBF kernel SVM,
  C = 10, gamma = 1/D), both scikit-learn and deterministic, on features standardised with the
  REAL training set's statistics (what is added changes what is learnt, not the scaling).

Features are arrays: grey pixels for the demo digits (:func:`~normguide.evaluation.metrics.pixel_features`),
CLIP image embeddings from a local directory for user data (:func:`labelled_table`, a linear probe).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

CLASSIFIERS = ("linear", "svm")
COLUMNS = ("training_set", "kind", "classifier", "rare_accuracy", "overall_accuracy", "n_train", "n_added")


@dataclass(frozen=True)
class Labelled:
    """Features (N, D) and their labels (N,)."""

    x: np.ndarray
    y: np.ndarray

    @classmethod
    def of(cls, x, y) -> Labelled:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(list(y), dtype=object).astype(str)
        if x.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"features must be (N, D) with one label per row, got {x.shape} and {y.shape[0]} labels")
        return cls(x, y)

    @classmethod
    def empty(cls, dim: int) -> Labelled:
        return cls(np.zeros((0, dim)), np.zeros(0, dtype=object).astype(str))

    def __add__(self, other: Labelled) -> Labelled:
        return Labelled(np.concatenate([self.x, other.x]), np.concatenate([self.y, other.y]))

    def __len__(self) -> int:
        return int(self.y.shape[0])


def _classifier(kind: str, balanced: bool, dim: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import SVC

    weight = "balanced" if balanced else None
    if kind == "linear":
        return LogisticRegression(C=0.1, max_iter=1000, tol=1e-3, class_weight=weight, random_state=0)
    if kind == "svm":
        # gamma fixed from the feature dimension (features are standardised on the REAL training
        # data): sklearn's gamma="scale" would move with whatever images are added
        return SVC(C=10.0, kernel="rbf", gamma=1.0 / dim, class_weight=weight, random_state=0)
    raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {kind!r}")


def class_accuracies(train: Labelled, test: Labelled, classifier: str = "linear", *, balanced: bool = False,
                     scale_from: Labelled | None = None) -> dict[str, float]:
    """Fit ``classifier`` on ``train``, return each test class's accuracy (recall) on ``test``.

    Features are standardised with the mean and std of ``scale_from`` (default: ``train``); the
    protocol passes the real training set, so that added images change what the classifier
    learns, not how its inputs are scaled (added noise would otherwise rescale every feature)."""
    base = scale_from if scale_from is not None else train
    mu = base.x.mean(axis=0)
    sd = base.x.std(axis=0)
    sd = np.where(sd > 1e-8, sd, 1.0)
    clf = _classifier(classifier, balanced, train.x.shape[1])
    clf.fit((train.x - mu) / sd, train.y)
    pred = clf.predict((test.x - mu) / sd)
    return {c: float(np.mean(pred[test.y == c] == c)) for c in dict.fromkeys(test.y.tolist())}


def augmentation_table(
    real_train: Labelled,
    test: Labelled,
    rare: Sequence[str],
    *,
    references: Labelled | None = None,
    synthetic: Mapping[str, Labelled] | None = None,
    extra_real: Labelled | None = None,
    classifiers: Sequence[str] = CLASSIFIERS,
) -> pd.DataFrame:
    """The long-tail augmentation protocol (module docstring) as one frame (:data:`COLUMNS`).

    ``rare``: the rare class labels (each must occur in ``test``); ``synthetic``: method -> its
    images' features and labels (rare classes only); ``extra_real``: more real images of the rare
    classes (the ceiling; give as many per class as a method adds). Rows are in the order: real
    only, real + references, real re-weighted, real + extra real, then per method ``real + m``
    and (with references) ``real + references + m``; ``kind`` says baseline / ceiling / method.
    """
    rare = [str(r) for r in rare]
    test_classes = set(test.y.tolist())
    missing = [r for r in rare if r not in test_classes]
    if missing:
        raise ValueError(f"rare class(es) {missing} have no test images; the test classes are {sorted(test_classes)}")
    known = set(real_train.y.tolist()) | set(rare)
    for what, data in [("references", references), ("extra real", extra_real), *((f"method {m!r}", s) for m, s in (synthetic or {}).items())]:
        if data is not None and len(data):
            unknown = sorted(set(data.y.tolist()) - known)
            if unknown:
                raise ValueError(f"{what}: label(s) {unknown} are not classes of the real training data or the rare classes")
    sets: list[tuple[str, str, Labelled, bool, int]] = [("real only", "baseline", real_train, False, 0)]
    if references is not None and len(references):
        sets.append(("real + references", "baseline", real_train + references, False, len(references)))
    sets.append(("real, re-weighted", "baseline", real_train, True, 0))
    if extra_real is not None and len(extra_real):
        sets.append(("real + extra real", "ceiling", real_train + extra_real, False, len(extra_real)))
    for m, data in (synthetic or {}).items():
        sets.append((f"real + {m}", "method", real_train + data, False, len(data)))
        if references is not None and len(references):
            sets.append((f"real + references + {m}", "method", real_train + references + data, False, len(references) + len(data)))
    rows = []
    for name, kind, train, balanced, added in sets:
        for clf in classifiers:
            acc = class_accuracies(train, test, clf, balanced=balanced, scale_from=real_train)
            rows.append({"training_set": name, "kind": kind, "classifier": clf,
                         "rare_accuracy": float(np.mean([acc[r] for r in rare])),
                         "overall_accuracy": float(np.mean(list(acc.values()))), "n_train": len(train), "n_added": added})
    return pd.DataFrame(rows, columns=list(COLUMNS))


# --------------------------------------------------------------------------------------------------
# The demo's digits


def digits_longtail(extra_per_class: int = 16):
    """The demo generator's own long-tail data, as images: (real_train, test, extra_real), each a
    (images, labels) pair with labels the digit names. ``real_train`` is the generator's
    long-tailed training split (rare digits 2, 5, 8: 8 images each); ``test`` the balanced held-out
    test split; ``extra_real``: the next ``extra_per_class`` real training images of each rare
    digit (never seen by the generator: the ceiling)."""
    from normguide.demo import digits

    gen = digits.load_split("generative")
    judge = digits.load_split("judge")
    test = digits.load_split("test")
    used = set(gen.indices.tolist())
    extra_imgs, extra_labels = [], []
    for label in digits.RARE_CLASSES:
        part = judge.of_class(label)
        keep = [i for i, idx in enumerate(part.indices.tolist()) if idx not in used][:extra_per_class]
        ims = part.images()
        extra_imgs += [ims[i] for i in keep]
        extra_labels += [digits.CLASS_NAMES[label]] * len(keep)
    names = lambda split: [digits.CLASS_NAMES[int(v)] for v in split.labels]  # noqa: E731
    return (gen.images(), names(gen)), (test.images(), names(test)), (extra_imgs, extra_labels)


# --------------------------------------------------------------------------------------------------
# User data: a labelled real table


LABELLED_COLUMNS = ("image_uri", "label", "split")


def labelled_table(frame: pd.DataFrame, *, source: str, concepts: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Check a labelled real table (columns image_uri, label, split in {train, test}) for the
    run's rare ``concepts`` (their labels); returns (train rows, test rows). One-line ValueError
    naming the table and what is wrong: a missing column, an unknown split, a concept absent from
    the table, a test class with no training image."""
    missing = [c for c in LABELLED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"labelled table {source}: missing column(s) {missing}; expected {list(LABELLED_COLUMNS)}")
    split = frame["split"].astype(str)
    bad = sorted(set(split) - {"train", "test"})
    if bad:
        raise ValueError(f"labelled table {source}: split must be 'train' or 'test', got {bad}")
    labels = frame["label"].astype(str)
    train, test = frame[split == "train"], frame[split == "test"]
    if train.empty or test.empty:
        raise ValueError(f"labelled table {source}: needs both train and test rows (got {len(train)} train, {len(test)} test)")
    classes = set(labels)
    unknown = [c for c in concepts if str(c) not in classes]
    if unknown:
        raise ValueError(f"labelled table {source}: concept(s) {unknown} are not among its labels {sorted(classes)}")
    untrained = sorted(set(labels[split == "test"]) - set(labels[split == "train"]))
    if untrained:
        raise ValueError(f"labelled table {source}: test class(es) {untrained} have no train images")
    return train.assign(label=train["label"].astype(str)), test.assign(label=test["label"].astype(str))


def probe_from_table(
    frame: pd.DataFrame,
    *,
    source: str,
    read_image: Callable[[str], object],
    embed: Callable[[list], np.ndarray],
    rare: Sequence[str],
    synthetic: Mapping[str, tuple[list, list]] | None = None,
    references: tuple[list, list] | None = None,
    classifiers: Sequence[str] = ("linear",),
) -> pd.DataFrame:
    """The protocol on user data: a labelled real table (:func:`labelled_table`), images read with
    ``read_image(uri)`` and embedded by ``embed(images)`` (e.g. ``ClipJudge(path).embed``: a
    linear probe on CLIP features); ``synthetic``: method -> (images, labels). No extra-real
    ceiling (the table's train split is all the real data there is)."""
    train, test = labelled_table(frame, source=source, concepts=rare)

    def feats(images, labels):
        return Labelled.of(embed(list(images)), labels)

    real_train = feats([read_image(u) for u in train.image_uri], train.label)
    real_test = feats([read_image(u) for u in test.image_uri], test.label)
    refs = feats(*references) if references is not None and len(references[0]) else None
    syn = {m: feats(ims, labs) for m, (ims, labs) in (synthetic or {}).items()}
    return augmentation_table(real_train, real_test, rare, references=refs, synthetic=syn, classifiers=classifiers)
