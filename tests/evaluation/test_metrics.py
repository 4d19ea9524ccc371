"""Metrics on synthetic feature arrays with known answers, and cross-checks against the reference
packages (``prdc``, ``vendi_score``) where those are installed."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

from normguide.evaluation import metrics as M


def gauss(n, d=8, shift=0.0, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


# ---- PRDC


def test_prdc_identical_sets_score_one():
    x = gauss(40)
    out = M.prdc(x, x.copy(), k=5)
    assert out["precision"] == out["recall"] == out["coverage"] == 1.0
    # every point lies in its own ball and in the balls of the k points whose k-NN it is, on
    # average k + 1 balls: density = (k + 1) / k
    assert out["density"] == pytest.approx(6 / 5)
    assert out["k_real"] == out["k_fake"] == 5


def test_prdc_disjoint_far_sets_score_zero():
    out = M.prdc(gauss(30), gauss(30, shift=100.0, seed=1), k=5)
    assert out["precision"] == out["recall"] == out["density"] == out["coverage"] == 0.0


def test_prdc_same_distribution_high_shifted_lower():
    real = gauss(200, seed=0)
    same = M.prdc(real, gauss(200, seed=1))
    far = M.prdc(real, gauss(200, shift=1.5, seed=2))
    assert same["precision"] > 0.8 and same["recall"] > 0.8 and same["coverage"] > 0.8
    assert far["precision"] < same["precision"] and far["coverage"] < same["coverage"]


def test_prdc_clamps_k_and_is_nan_when_undefined():
    real, fake = gauss(3), gauss(10, seed=1)
    out = M.prdc(real, fake, k=5)
    assert out["k_real"] == 2 and out["k_fake"] == 5
    assert all(0.0 <= out[key] for key in ("precision", "recall", "coverage"))
    one = M.prdc(gauss(1), fake, k=5)
    assert math.isnan(one["precision"]) and math.isnan(one["coverage"]) and math.isnan(one["density"])
    assert not math.isnan(one["recall"])
    empty = M.prdc(np.zeros((0, 8)), fake)
    assert all(math.isnan(empty[key]) for key in ("precision", "recall", "density", "coverage"))
    with pytest.raises(ValueError, match="k must be"):
        M.prdc(real, fake, k=0)
    with pytest.raises(ValueError, match="dimensions differ"):
        M.prdc(gauss(5, d=3), gauss(5, d=4))


@pytest.mark.parametrize("n_real,n_fake,shift", [(60, 80, 0.0), (50, 50, 0.7), (100, 40, 2.0)])
def test_prdc_matches_reference_package(n_real, n_fake, shift, capsys):
    prdc = pytest.importorskip("prdc")
    real, fake = gauss(n_real, seed=3), gauss(n_fake, shift=shift, seed=4)
    ref = prdc.compute_prdc(real_features=real, fake_features=fake, nearest_k=5)
    capsys.readouterr()  # the package prints the set sizes
    ours = M.prdc(real, fake, k=5)
    for key in ("precision", "recall", "density", "coverage"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key


# ---- diversity


@pytest.mark.parametrize("n,d", [(10, 4), (3, 16)])  # n > d (dual) and n < d (kernel)
def test_vendi_identical_is_one(n, d):
    x = np.tile(np.random.default_rng(0).normal(size=(1, d)), (n, 1))
    assert M.vendi_score(x) == pytest.approx(1.0)


@pytest.mark.parametrize("n,d", [(5, 5), (4, 12)])
def test_vendi_orthogonal_is_n(n, d):
    x = np.eye(d)[:n] * np.arange(1, n + 1)[:, None]  # scale does not matter (cosine kernel)
    assert M.vendi_score(x) == pytest.approx(float(n))


def test_vendi_between_and_nan():
    x = gauss(30)
    assert 1.0 < M.vendi_score(x) < 30.0
    assert math.isnan(M.vendi_score(np.zeros((0, 8))))


@pytest.mark.parametrize("n,d", [(40, 8), (6, 32)])
def test_vendi_matches_reference_package(n, d):
    vendi = pytest.importorskip("vendi_score.vendi")
    x = gauss(n, d=d, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # scipy.sparse.csr inside the package
        ref = vendi.score_X(x)
    assert M.vendi_score(x) == pytest.approx(ref, rel=1e-9)


def test_mean_pairwise_distance():
    assert M.mean_pairwise_distance(np.ones((5, 3))) == pytest.approx(0.0, abs=1e-12)
    assert M.mean_pairwise_distance(np.eye(4)) == pytest.approx(1.0)
    x = gauss(7, seed=2)
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    brute = np.mean([1 - u[i] @ u[j] for i in range(7) for j in range(7) if i != j])
    assert M.mean_pairwise_distance(x) == pytest.approx(brute)
    assert math.isnan(M.mean_pairwise_distance(gauss(1)))


# ---- recognisability and similarity


def test_recognisability():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.4, 0.1], [0.2, 0.2, 0.6]])
    assert M.recognisability(probs, 0) == 0.5
    assert M.recognisability(probs, 2) == 0.25
    assert math.isnan(M.recognisability(np.ones((3, 1)), 0))  # one label: undefined
    assert math.isnan(M.recognisability(np.zeros((0, 3)), 1))
    with pytest.raises(ValueError, match="out of range"):
        M.recognisability(probs, 3)
    # a confident winner is needed when asked for: row 2 wins with 0.5, row 0 with 0.7
    assert M.recognisability(probs, 0, min_confidence=0.6) == 0.25
    near_uniform = np.full((4, 10), 0.099)
    near_uniform[:, 8] = 0.109  # argmax 8 for all, but no confidence
    assert M.recognisability(near_uniform, 8) == 1.0
    assert M.recognisability(near_uniform, 8, min_confidence=0.5) == 0.0


def test_reference_similarity():
    x = gauss(5)
    assert M.reference_similarity(x, 3.0 * x[:1].repeat(4, axis=0)) == pytest.approx(float(np.mean(
        (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (x[0] / np.linalg.norm(x[0])))))
    assert M.reference_similarity(x[:1], x[:1]) == pytest.approx(1.0)
    assert M.reference_similarity(np.eye(3)[:1], np.eye(3)[1:]) == pytest.approx(0.0)
    assert math.isnan(M.reference_similarity(np.zeros((0, 8)), x))


# ---- train on synthetic, test on real


def _clusters(n_per, seed, shift=4.0, labels=("a", "b", "c")):
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(size=(n_per, 6)) + shift * np.eye(6)[i] for i in range(len(labels))])
    return x, [lab for lab in labels for _ in range(n_per)]


def test_tstr_separable_is_perfect_and_deterministic():
    xtr, ytr = _clusters(20, 0)
    xte, yte = _clusters(15, 1)
    acc, per = M.tstr_accuracy(xtr, ytr, xte, yte)
    assert acc == 1.0 and per == {"a": 1.0, "b": 1.0, "c": 1.0}
    assert M.tstr_accuracy(xtr, ytr, xte, yte) == (acc, per)


def test_tstr_random_labels_near_chance_and_missing_class_scores_zero():
    xtr, _ = _clusters(60, 0)
    ytr = list(np.random.default_rng(0).choice(["a", "b", "c"], size=len(xtr)))
    xte, yte = _clusters(100, 1)
    acc, _ = M.tstr_accuracy(xtr, ytr, xte, yte)
    assert acc < 0.55  # chance 1/3
    xtr2, ytr2 = _clusters(20, 0, labels=("a", "b"))
    acc2, per2 = M.tstr_accuracy(xtr2, ytr2, xte, yte)
    assert per2["c"] == 0.0 and acc2 == pytest.approx((per2["a"] + per2["b"]) / 3)


def test_tstr_nan_with_one_training_class_or_no_test():
    xtr, ytr = _clusters(10, 0, labels=("a",))
    xte, yte = _clusters(5, 1)
    acc, per = M.tstr_accuracy(xtr, ytr, xte, yte)
    assert math.isnan(acc) and all(math.isnan(v) for v in per.values())
    xtr, ytr = _clusters(10, 0)
    assert math.isnan(M.tstr_accuracy(xtr, ytr, np.zeros((0, 6)), [])[0])


def test_pixel_features_common_size():
    from PIL import Image

    ims = [Image.new("RGB", (32, 32), (255, 255, 255)), Image.new("L", (8, 8), 0), Image.new("RGB", (64, 48), (0, 0, 0))]
    x = M.pixel_features(ims, size=16)
    assert x.shape == (3, 256)
    assert np.allclose(x[0], 1.0) and np.allclose(x[1], 0.0)
    assert M.pixel_features([]).shape == (0, 256)


# ---- seed statistics


def test_seed_statistics():
    manifest = pd.DataFrame(
        {
            "method": ["nao", "nao", "nao", "random", "random"],
            "seed_zscore": [-1.0, 0.0, 1.0, 0.5, 0.5],
            "seed_norm": [15.0, 16.0, 17.0, 16.0, 16.0],
            "reconstruction_error": [0.1, 0.2, 0.3, None, None],
        }
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # all-missing groups must not warn
        stats = M.seed_statistics(manifest)
    assert list(stats.index) == ["nao", "random"]
    assert stats.loc["nao", "seed_zscore_mean"] == pytest.approx(0.0)
    assert stats.loc["nao", "seed_zscore_std"] == pytest.approx(1.0)
    assert stats.loc["nao", "reconstruction_error_mean"] == pytest.approx(0.2)
    assert stats.loc["random", "seed_zscore_std"] == 0.0
    assert math.isnan(stats.loc["random", "reconstruction_error_mean"])
    no_seed_cols = M.seed_statistics(manifest[["method"]])
    assert no_seed_cols.isna().all().all()


def test_all_zero_features_are_one_shared_point():
    # a ReLU judge (the demo classifier) maps noise to exactly zero features
    zeros = np.zeros((6, 4))
    assert M.vendi_score(zeros) == pytest.approx(1.0)
    assert M.mean_pairwise_distance(zeros) == pytest.approx(0.0, abs=1e-12)
    mixed = np.concatenate([np.zeros((2, 4)), np.eye(4)[:2]])
    assert M.vendi_score(mixed) == pytest.approx(M.vendi_score(np.array([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]])))
    assert M.reference_similarity(zeros, np.eye(4)) == 0.0
    assert M.reference_similarity(zeros, zeros[:1]) == pytest.approx(1.0)
