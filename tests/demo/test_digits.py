"""normguide.demo.digits: the fixed, disjoint, long-tailed splits, prompts and images."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from normguide.demo import digits as D


def _sets():
    return {name: set(D.load_split(name).indices.tolist()) for name in D.SPLITS}


def test_held_out_images_never_train_anything():
    s = _sets()
    assert not s["heldout"] & s["judge"]
    assert not s["heldout"] & s["generative"]
    assert s["reference"] | s["test"] == s["heldout"] and not s["reference"] & s["test"]
    assert s["generative"] <= s["judge"]
    assert s["heldout"] | s["judge"] == set(range(1797))  # every image is somewhere


def test_split_sizes_per_class():
    counts = {name: np.bincount(D.load_split(name).labels, minlength=10) for name in D.SPLITS}
    totals = counts["heldout"] + counts["judge"]
    np.testing.assert_array_equal(totals, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    assert np.all(np.abs(counts["heldout"] - 0.25 * totals) <= 0.5)
    assert D.REFERENCE_PER_CLASS == 10 and np.all(counts["reference"] == 10)
    np.testing.assert_array_equal(counts["test"], counts["heldout"] - 10)
    assert len(D.load_split("heldout")) == 450 and len(D.load_split("test")) == 350


def test_generative_split_is_long_tailed_as_documented():
    gen, judge = D.load_split("generative"), D.load_split("judge")
    assert D.RARE_CLASSES == (2, 5, 8) and D.RARE_TRAIN_PER_CLASS == 8
    assert set(D.COMMON_CLASSES) | set(D.RARE_CLASSES) == set(range(10))
    for c in range(10):
        kept, available = gen.of_class(c), judge.of_class(c)
        if c in D.RARE_CLASSES:
            assert len(kept) == 8
            np.testing.assert_array_equal(kept.indices, available.indices[:8])  # the first 8, in split order
        else:
            np.testing.assert_array_equal(kept.indices, available.indices)  # all of them
            assert len(kept) > 120


def test_split_is_deterministic_across_processes_and_matches_the_shipped_weights(training_record):
    here = D.split_fingerprint()
    code = "from normguide.demo.digits import split_fingerprint; print(split_fingerprint())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=dict(os.environ))
    assert out.stdout.strip() == here
    # The weights were trained on this split: a different one (e.g. a numpy change) would put
    # training images into the held-out test set.
    assert training_record["split"]["fingerprint"] == here
    assert training_record["split"]["rare_classes"] == list(D.RARE_CLASSES)


def test_references_are_the_first_held_out_images_of_each_class():
    held, ref = D.load_split("heldout"), D.load_split("reference")
    for c in range(10):
        np.testing.assert_array_equal(ref.of_class(c).indices, held.of_class(c).indices[:10])
    ims = D.reference_images(5, n=3)
    assert len(ims) == 3 and ims[0].tobytes() == D.digit_to_image(ref.of_class(5).digits[0]).tobytes()
    with pytest.raises(ValueError):
        D.reference_images(5, n=11)


def test_prompts():
    assert D.prompt_for(7) == "a handwritten digit seven"
    assert [D.prompt_for(c).split()[-1] for c in range(10)] == list(D.CLASS_NAMES)
    for bad in (10, -1, 2.0, True, "7"):
        with pytest.raises(ValueError):
            D.prompt_for(bad)


def test_images_are_white_digits_on_black_at_32_px():
    split = D.load_split("test")
    im = D.digit_to_image(split.digits[0])
    assert im.size == (32, 32) and im.mode == "RGB"
    arr = np.asarray(im)
    assert (arr[..., 0] == arr[..., 1]).all() and (arr[..., 1] == arr[..., 2]).all()
    blank = np.asarray(D.digit_to_image(np.zeros((8, 8))))
    assert blank.max() == 0  # background black
    assert np.asarray(D.digit_to_image(np.full((8, 8), 16.0))).min() == 255  # ink white
    assert D.digit_to_image(split.digits[0], resolution=64).size == (64, 64)
    with pytest.raises(ValueError):
        D.digit_to_image(np.zeros((8, 9)))


def test_tensor_matches_images():
    split = D.load_split("reference").of_class(3)
    x = split.tensor()
    assert x.shape == (10, 3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    first = torch.from_numpy(np.asarray(split.images()[0], dtype=np.float32)).permute(2, 0, 1) / 127.5 - 1
    assert torch.equal(x[0], first)


def test_unknown_split():
    with pytest.raises(ValueError, match="split"):
        D.load_split("train")
