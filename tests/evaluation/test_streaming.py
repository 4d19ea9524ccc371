"""Evaluation streams its images (issue 23, item 5): read ``chunk_size`` at a time, never all
held, and the result does not depend on the chunking."""

from __future__ import annotations

import weakref

import numpy as np
import pandas as pd
import pytest

from normguide.evaluation import DigitsJudge, evaluate
from normguide.evaluation.stream import EVAL_CHUNK, Chained, LazyImages, chunks

from .test_evaluate import ColourJudge, _run


class Live:
    """A loader of images (by index into ``source``) that counts how many it made are alive."""

    def __init__(self, source):
        self.source, self.loads, self.alive, self.peak = source, 0, 0, 0

    def __call__(self, i):
        im = self.source[i].copy()
        self.loads += 1
        self.alive += 1
        self.peak = max(self.peak, self.alive)
        weakref.finalize(im, self._gone)
        return im

    def _gone(self):
        self.alive -= 1


def _lazy(images, live: Live) -> LazyImages:
    return LazyImages(range(len(images)), live)


def test_chunk_size_does_not_change_the_result():
    manifest, images, refs, test = _run(n=5)  # 30 images, 12 references, 36 real test images
    want = evaluate(manifest, images, refs, ColourJudge(), real_test=test, include_references=True, chunk_size=1000)
    for size in (1, 7):
        got = evaluate(manifest, images, refs, ColourJudge(), real_test=test, include_references=True, chunk_size=size)
        pd.testing.assert_frame_equal(got, want, check_exact=True)
    # the judge's features for the train-on-synthetic classifier too
    a, b = (evaluate(manifest, images, refs, ColourJudge(), real_test=test, tstr_features="judge", chunk_size=size)
            for size in (3, 1000))
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        evaluate(manifest, images, refs, ColourJudge(), chunk_size=0)


def test_images_are_read_a_chunk_at_a_time_and_never_all_held():
    manifest, images, refs, test = _run(n=10)  # 60 images
    live = Live(images)
    ref_live = {c: Live(v) for c, v in refs.items()}
    lazy_refs = {c: _lazy(v, ref_live[c]) for c, v in refs.items()}
    want = evaluate(manifest, images, refs, ColourJudge(), real_test=test, include_references=True)
    got = evaluate(manifest, _lazy(images, live), lazy_refs, ColourJudge(), real_test=test, include_references=True,
                   chunk_size=4)
    pd.testing.assert_frame_equal(got, want, check_exact=True)
    assert live.loads == 60 and live.alive == 0  # each image read once, none kept
    assert live.peak <= 4, live.peak  # at most one chunk alive at a time
    assert all(r.alive == 0 and r.peak <= 4 for r in ref_live.values())


def test_the_digits_judge_gives_the_same_bytes_in_chunks_of_its_batch():
    """The default chunk (256) is the digit classifier's batch: 260 images in chunks of 256 score
    exactly as in one call over all of them. (Chunks of 7 change the classifier's batches and its
    float32 sums in the last bits, enough to move k-NN ties among duplicate images: why the
    default is a multiple of the judges' batches.)"""
    from normguide.demo import digits

    assert EVAL_CHUNK % 256 == 0 and EVAL_CHUNK % 32 == 0  # the digit classifier's and CLIP's batches
    test = digits.load_split("test")
    pool = [(d, im) for d in (1, 7) for im in test.of_class(d).images()]
    rng = np.random.default_rng(0)
    picks = [pool[i] for i in rng.integers(0, len(pool), 260)]
    manifest = pd.DataFrame({"concept_id": [f"d{d}" for d, _ in picks], "name": [str(d) for d, _ in picks],
                             "method": "m"})
    images = [im for _, im in picks]
    refs = {f"d{d}": test.of_class(d).images()[:3] for d in (1, 7)}
    judge = DigitsJudge()
    one_call = evaluate(manifest, images, refs, judge, chunk_size=10_000)
    pd.testing.assert_frame_equal(evaluate(manifest, images, refs, judge), one_call, check_exact=True)


def test_chained_and_chunks():
    a, b = LazyImages(range(3), lambda i: i * 10), [100, 200]
    seq = Chained(a, [], b)
    assert len(seq) == 5 and list(seq) == [0, 10, 20, 100, 200] and seq[-1] == 200 and seq[1:3] == [10, 20]
    with pytest.raises(IndexError):
        seq[5]
    assert list(chunks(seq, 2)) == [[0, 10], [20, 100], [200]]
    assert list(a[1:]) == [10, 20]
    with pytest.raises(ValueError, match="chunk size"):
        list(chunks(seq, 0))


def test_knn_radii_in_blocks_are_the_radii_of_the_whole_matrix():
    """prdc's k-NN radii are computed a block of rows at a time (memory block x N, not N x N):
    the same float64 values as sorting the whole distance matrix, duplicates included."""
    from scipy.spatial.distance import cdist

    from normguide.evaluation.metrics import _knn_radii

    x = np.random.default_rng(0).normal(size=(50, 8))
    x[10] = x[3]  # a duplicate: distance exactly 0
    whole = cdist(x, x)
    np.fill_diagonal(whole, -1.0)
    for k in (1, 4):
        want = np.sort(whole, axis=1)[:, k]
        for block in (1, 7, 50, 512):
            assert np.array_equal(_knn_radii(x, k, block=block), want)
