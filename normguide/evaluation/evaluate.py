"""``evaluate``: every metric, per (concept, method) and per method over all concepts, as one frame."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd

from normguide.evaluation import metrics as M
from normguide.evaluation.stream import EVAL_CHUNK, Chained, chunks

if TYPE_CHECKING:
    from PIL import Image

    from normguide.evaluation.judges import Judge

ALL = "(all)"
#: The pseudo-method under which ``evaluate(include_references=True)`` scores the reference images
#: themselves: the baseline every synthetic method should beat (it is not a "leader").
REFERENCES = "references"


@dataclass(frozen=True)
class MetricInfo:
    column: str
    block: str
    meaning: str
    higher_is_better: bool | None  # None: descriptive, no "best"


#: The metric columns of :func:`evaluate`'s frame, in order, with what each means (the report uses
#: these lines).
METRICS: tuple[MetricInfo, ...] = (
    MetricInfo("recognisability", "Recognisability", "fraction of images the judge classifies as their concept (with its confidence threshold, if any; never an image at the similarity floor)", True),
    MetricInfo("confidence", "Recognisability", "mean probability the judge gives its top answer, whatever the answer", None),
    MetricInfo("none_of_these", "Recognisability", "fraction of images the judge abstains on: no label reaches its confidence threshold, or the image is at the similarity floor", False),
    MetricInfo("ref_similarity", "Recognisability", "mean cosine similarity of image features to the concept's reference features", True),
    MetricInfo("precision", "Fidelity and diversity", "fraction of images inside the real images' k-NN balls (fidelity)", True),
    MetricInfo("recall", "Fidelity and diversity", "fraction of real images inside the generated images' k-NN balls (diversity)", True),
    MetricInfo("density", "Fidelity and diversity", "real k-NN balls holding each image, in units of k (≈1 when like real; can exceed 1)", True),
    MetricInfo("coverage", "Fidelity and diversity", "fraction of real images whose k-NN ball holds a generated image", True),
    MetricInfo("vendi", "Fidelity and diversity", "Vendi score: effective number of distinct images (cosine kernel; grows with n)", True),
    MetricInfo("pairwise_distance", "Fidelity and diversity", "mean cosine distance between two images of the concept", True),
    MetricInfo("tstr_accuracy", "Downstream value", "accuracy on real test images of a classifier trained only on this method's synthetic images", True),
    MetricInfo("seed_zscore_mean", "Seed statistics", "mean z-score of the seed norm under the chi prior", None),
    MetricInfo("seed_zscore_std", "Seed statistics", "spread (std) of the seed norm z-scores", None),
    MetricInfo("seed_norm_mean", "Seed statistics", "mean seed norm", None),
    MetricInfo("seed_norm_std", "Seed statistics", "spread (std) of seed norms", None),
    MetricInfo("reconstruction_error_mean", "Seed statistics", "mean DDIM inversion reconstruction error of the source references", None),
    MetricInfo("reconstruction_error_std", "Seed statistics", "spread (std) of the reconstruction errors", None),
)
METRIC_COLUMNS: tuple[str, ...] = tuple(m.column for m in METRICS)
#: Every column of the frame, in order.
COLUMNS: tuple[str, ...] = ("concept_id", "name", "method", "n_images", *METRIC_COLUMNS, "n_real", "prdc_real",
                            "n_at_floor")
#: Integer count columns (the others are metrics, strings or n_images/n_real).
_COUNT_COLUMNS = ("n_images", "n_real", "n_at_floor")


def _empty() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object if c in ("concept_id", "name", "method", "prdc_real") else float) for c in COLUMNS})


def _scores(judge: Judge, images: Sequence[Image.Image], *, labels: list[str] | None = None,
            pixels: bool = False, chunk_size: int = EVAL_CHUNK) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """What the metrics need from ``images``, read ``chunk_size`` at a time (only one chunk is
    decoded at once): (judge features (N, D), the judge's probabilities over ``labels`` (N, C)
    or None, 16 x 16 grey pixels (N, 256) or None)."""
    feats, probs, pix = [], [], []
    for chunk in chunks(images, chunk_size):
        f = np.asarray(judge.embed(chunk), dtype=np.float64)
        if f.shape[0] != len(chunk):
            raise ValueError(f"judge.embed returned {f.shape[0]} rows for {len(chunk)} images")
        feats.append(f)
        if labels is not None:
            p = np.asarray(judge.class_probs(chunk, labels), dtype=np.float64)
            if p.shape != (len(chunk), len(labels)):
                raise ValueError(f"judge.class_probs returned shape {p.shape}, expected {(len(chunk), len(labels))}")
            probs.append(p)
        if pixels:
            pix.append(M.pixel_features(chunk))
        del chunk
    if not feats:
        return (np.zeros((0, 0)), np.zeros((0, len(labels))) if labels is not None else None,
                M.pixel_features([]) if pixels else None)
    return (np.concatenate(feats), np.concatenate(probs) if labels is not None else None,
            np.concatenate(pix) if pixels else None)


def _embed_groups(judge: Judge, groups: Mapping[str, Sequence[Image.Image]], keys: Sequence[str], *,
                  pixels: bool = False, chunk_size: int = EVAL_CHUNK) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
    """Embed several groups of images as one stream (chunks span groups); split back per key.
    With ``pixels`` also the grey pixels of all of them, in key order."""
    flat = Chained(*(groups[key] for key in keys))
    feats, _, pix = _scores(judge, flat, pixels=pixels, chunk_size=chunk_size)
    out, start = {}, 0
    for key in keys:
        n = len(groups[key])
        out[key] = feats[start : start + n] if len(flat) else np.zeros((0, 0))
        start += n
    return out, pix


def evaluate(
    manifest: pd.DataFrame,
    images: Sequence[Image.Image],
    references: Mapping[str, Sequence[Image.Image]],
    judge: Judge,
    real_test: Mapping[str, Sequence[Image.Image]] | None = None,
    names: Mapping[str, str] | None = None,
    *,
    k: int = 5,
    tstr_features: Literal["pixels", "judge"] = "pixels",
    similarity_floor: float = M.SIMILARITY_FLOOR,
    include_references: bool = False,
    chunk_size: int = EVAL_CHUNK,
) -> pd.DataFrame:
    """Score a run's images, per (concept, method) and per method over all concepts.

    - ``manifest``: one row per image with at least ``concept_id`` and ``method``; ``name``,
      ``seed_zscore``, ``seed_norm`` and ``reconstruction_error`` are used when present.
    - ``images``: the images, row-aligned with ``manifest``: any sequence, read ``chunk_size`` at a
      time and never kept (a :class:`~normguide.evaluation.stream.LazyImages` that decodes each on
      reading keeps memory flat in the number of images).
    - ``references``: concept_id -> that concept's reference images (every concept needs >= 1);
      sequences read the same way.
    - ``judge``: the feature model (:class:`~normguide.evaluation.judges.Judge`).
    - ``real_test``: concept_id -> held-out real images of that concept, or None.
    - ``names``: concept_id -> concept name; default: the manifest's ``name`` column, else the id.
    - ``k``: neighbours for precision/recall/density/coverage (clamped to the sample sizes).
    - ``tstr_features``: what the train-on-synthetic classifier sees: ``"pixels"`` (default, 16 x 16
      grey pixels: the judge was trained on real data of the same classes, so its features would
      hand the classifier real-data knowledge) or ``"judge"`` (judge embeddings; for photo runs,
      where raw pixels are too weak a representation).
    - ``include_references``: also score each concept's reference images themselves, as the
      method ``"references"`` (rows after the manifest's; no seed statistics): the data a user
      already has, the baseline for every synthetic method (its ref_similarity includes each
      reference's similarity 1 with itself).
    - ``chunk_size``: images decoded and scored at a time (default
      :data:`~normguide.evaluation.stream.EVAL_CHUNK`, 256, a multiple of the built-in judges'
      batch sizes, so the result does not depend on it); only judge features, class
      probabilities and 16 x 16 pixels are kept per image.

    Returns one row per (concept_id, method) present in the manifest (manifest order), then one row
    per method with ``concept_id == "(all)"``. Columns: :data:`COLUMNS`.

    - recognisability over ``judge.label_names(run's names)`` (digits judge: all 10 digits; CLIP:
      the run's concept names plus any distractors), with the judge's ``min_confidence`` (digits
      judge 0.5, CLIP 0); NaN with fewer than 2 labels.
    - abstention: an image whose features are (near) zero or whose mean cosine similarity to the
      concept's references is at most ``similarity_floor`` (:data:`~normguide.evaluation.metrics.
      SIMILARITY_FLOOR`) is "at the floor": the judge's probabilities for it come from its biases,
      so it is never recognised, counts as "none of these" and is counted in ``n_at_floor``.
      ``confidence`` is the mean top probability, ``none_of_these`` the fraction of images with no
      label at the judge's threshold or at the floor.
    - ref_similarity against the references.
    - precision/recall/density/coverage against the concept's real test images when given (the
      larger set, so steadier k-NN radii, and never seen by the generator), else against its
      references; ``prdc_real`` says which ("real_test" / "references"), ``n_real`` how many.
    - vendi and pairwise_distance: within the method's images of the concept.
    - tstr_accuracy: per method, one classifier trained on the method's images of all the run's
      concepts (labels = concept ids), tested on all real test images of those concepts: per
      concept its accuracy on that concept's test images, on "(all)" rows the mean over concepts
      (balanced accuracy). NaN without real test images or with fewer than 2 concepts.
    - seed statistics from the manifest columns.

    "(all)" rows: ``n_images`` and ``n_real`` are sums, the seed statistics are over all the
    method's images, every other metric is the unweighted mean over the method's concepts (so each
    concept counts once; the per-concept rows give the spread).
    """
    _check_inputs(manifest, images, tstr_features)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    if len(manifest) == 0:
        return _empty()
    manifest = manifest.reset_index(drop=True)
    concepts = list(dict.fromkeys(manifest["concept_id"].astype(str)))
    methods = list(dict.fromkeys(manifest["method"].astype(str)))
    lacking = [c for c in concepts if len(references.get(c, ())) == 0]
    if lacking:
        raise ValueError(f"no reference images for concept(s) {lacking}: every evaluated concept needs at least one")
    real_test = {c: real_test.get(c, ()) for c in concepts} if real_test is not None else {c: () for c in concepts}
    if include_references and REFERENCES in set(methods):
        raise ValueError(f"the manifest already has a method named {REFERENCES!r}; it is reserved for the references row")
    concept_name = _concept_names(manifest, concepts, names)
    if include_references:  # the references as one more method, after the manifest's rows
        extra = pd.DataFrame({"concept_id": [c for c in concepts for _ in references[c]], "method": REFERENCES})
        extra["name"] = extra["concept_id"].map(concept_name)
        manifest = pd.concat([manifest, extra], ignore_index=True)
        images = Chained(images, *(references[c] for c in concepts))
        methods.append(REFERENCES)
    cids = manifest["concept_id"].astype(str)
    methods_col = manifest["method"].astype(str)

    # ---- features, class probabilities and pixels: one pass over each image set, a chunk at a time
    pixels = tstr_features == "pixels"
    labels, min_conf = _labels(judge, [concept_name[c] for c in concepts])
    fake, probs, fake_pixels = _scores(judge, images, labels=labels, pixels=pixels, chunk_size=chunk_size)
    ref_feats, _ = _embed_groups(judge, references, concepts, chunk_size=chunk_size)
    test_feats, test_pixels = _embed_groups(judge, real_test, concepts, pixels=pixels, chunk_size=chunk_size)
    tstr = _tstr(fake_pixels if pixels else fake, test_pixels if pixels else None, fake, test_feats, real_test,
                 concepts, methods, cids, methods_col)
    seeds_cm = M.seed_statistics(manifest.assign(concept_id=cids, method=methods_col), by=("concept_id", "method"))
    seeds_m = M.seed_statistics(manifest.assign(method=methods_col), by=("method",))

    # ---- per (concept, method), in manifest order
    groups = manifest.groupby([cids, methods_col], sort=False).indices
    records = []
    for c, m in dict.fromkeys(zip(cids, methods_col)):
        idx = groups[(c, m)]
        real_set = "real_test" if len(real_test[c]) else "references"
        real_x = test_feats[c] if real_set == "real_test" else ref_feats[c]
        records.append(_concept_row(c, concept_name[c], m, fake[idx], probs[idx], labels.index(concept_name[c]),
                                    min_conf, ref_feats[c], real_x, real_set, k=k, similarity_floor=similarity_floor,
                                    tstr=tstr[m][1].get(c, M.NAN), seeds=seeds_cm.loc[(c, m)].to_dict()))
    per = pd.DataFrame.from_records(records)
    # ---- per method over all concepts
    records += [_method_row(m, per[per["method"] == m], tstr[m][0], seeds_m.loc[m].to_dict()) for m in methods]

    out = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    for col in _COUNT_COLUMNS:
        out[col] = out[col].astype(int)
    for col in METRIC_COLUMNS:
        out[col] = out[col].astype(float)
    return out


def _check_inputs(manifest, images, tstr_features) -> None:
    if not isinstance(manifest, pd.DataFrame):
        raise TypeError(f"manifest must be a pandas DataFrame, got {type(manifest).__name__}")
    missing = [c for c in ("concept_id", "method") if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s) {missing}")
    if len(images) != len(manifest):
        raise ValueError(f"got {len(images)} images for {len(manifest)} manifest rows; they must be row-aligned")
    if tstr_features not in ("pixels", "judge"):
        raise ValueError(f"tstr_features must be 'pixels' or 'judge', got {tstr_features!r}")


def _concept_names(manifest: pd.DataFrame, concepts: list[str], names: Mapping[str, str] | None) -> dict[str, str]:
    """concept_id -> name: ``names``, else the manifest's ``name`` column, else the id."""
    cids = manifest["concept_id"].astype(str)
    out = {}
    for c in concepts:
        if names is not None and c in names:
            out[c] = str(names[c])
        elif "name" in manifest.columns and manifest.loc[cids == c, "name"].notna().any():
            out[c] = str(manifest.loc[cids == c, "name"].dropna().iloc[0])
        else:
            out[c] = c
    return out


def _labels(judge: Judge, run_names: list[str]) -> tuple[list[str], float]:
    """The judge's labels (the run's names plus its own) and its threshold."""
    labels = list(judge.label_names(run_names)) if hasattr(judge, "label_names") else list(dict.fromkeys(run_names))
    lost = [n for n in run_names if n not in labels]
    if lost:
        raise ValueError(f"judge.label_names dropped the concept name(s) {lost}")
    return labels, float(getattr(judge, "min_confidence", 0.0))


def _tstr(train_x, test_pixels, fake, test_feats, real_test, concepts, methods, cids, methods_col) -> dict:
    """Train on synthetic, test on real, per method: method -> (balanced accuracy, per concept).
    ``train_x``: the synthetic rows' features (pixels or judge); ``test_pixels``: the real test
    images' pixels (all concepts, in order), or None for judge features."""
    test_labels = [c for c in concepts for _ in real_test[c]]
    if test_pixels is not None:
        test_x = test_pixels
    else:
        test_x = np.concatenate([test_feats[c] for c in concepts if len(real_test[c])]) if test_labels else np.zeros((0, fake.shape[1]))
    tstr: dict[str, tuple[float, dict]] = {}
    for m in methods:
        rows = (methods_col == m).to_numpy()
        tstr[m] = M.tstr_accuracy(train_x[rows], cids[rows].tolist(), test_x, test_labels) if test_labels else (M.NAN, {})
    return tstr


def _concept_row(c: str, name: str, m: str, x, probs, label: int, min_conf: float, ref_x, real_x, real_set: str, *,
                 k: int, similarity_floor: float, tstr: float, seeds: dict) -> dict:
    """The metrics of one method's images ``x`` of one concept."""
    pr = M.prdc(real_x, x, k=k)
    floor = M.at_similarity_floor(x, ref_x, similarity_floor)
    return {
        "concept_id": c,
        "name": name,
        "method": m,
        "n_images": len(x),
        "recognisability": M.recognisability(probs, label, min_conf, abstain=floor),
        "confidence": M.judge_confidence(probs),
        "none_of_these": M.none_of_these(probs, min_conf, abstain=floor),
        "ref_similarity": M.reference_similarity(x, ref_x),
        "precision": pr["precision"],
        "recall": pr["recall"],
        "density": pr["density"],
        "coverage": pr["coverage"],
        "vendi": M.vendi_score(x),
        "pairwise_distance": M.mean_pairwise_distance(x),
        "tstr_accuracy": tstr,
        **seeds,
        "n_real": len(real_x),
        "prdc_real": real_set,
        "n_at_floor": int(floor.sum()),
    }


def _method_row(m: str, sub: pd.DataFrame, tstr: float, seeds: dict) -> dict:
    """A method's "(all)" row: counts summed, seed statistics over all its images (``seeds``),
    every other metric the unweighted mean over its concepts (``sub``: their rows)."""
    rec = {"concept_id": ALL, "name": ALL, "method": m, "n_images": int(sub["n_images"].sum())}
    for col in [mi.column for mi in METRICS if not mi.block == "Seed statistics"]:
        vals = sub[col].dropna()
        rec[col] = float(vals.mean()) if len(vals) else M.NAN
    rec["tstr_accuracy"] = tstr
    rec.update(seeds)
    rec["n_real"] = int(sub["n_real"].sum())
    rec["n_at_floor"] = int(sub["n_at_floor"].sum())
    kinds = sorted(set(sub["prdc_real"]))
    rec["prdc_real"] = kinds[0] if len(kinds) == 1 else "mixed"
    return rec
