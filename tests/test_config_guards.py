"""Config files cannot exhaust the machine, and their errors are one line."""

from __future__ import annotations

import time

import pytest

from normguide.config import MAX_CONFIG_BYTES, RunConfig, load_config

# 11 lines, 9^10 (3.5e9) leaves once its aliases are expanded
ALIAS_BOMB = "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefghi", "bcdefghij")) + \
    f"k: [{', '.join(['*j'] * 9)}]\n"


def test_an_alias_bomb_fails_fast_in_one_line_naming_the_file(tmp_path):
    assert len(ALIAS_BOMB.splitlines()) == 11
    p = tmp_path / "bomb.yaml"
    p.write_text(ALIAS_BOMB)
    t0 = time.perf_counter()
    with pytest.raises(ValueError) as ei:
        load_config(p)
    assert time.perf_counter() - t0 < 2  # today: 1.3 GB and growing until killed
    msg = str(ei.value)
    assert "\n" not in msg and "bomb.yaml" in msg and "alias (*a) on line 2" in msg


def test_even_one_alias_is_refused(tmp_path):
    p = tmp_path / "merge.yaml"
    p.write_text("base: &b {num_images: 2}\nplan:\n  <<: *b\n")
    with pytest.raises(ValueError, match="aliases and anchors are not allowed"):
        load_config(p)


def test_a_config_file_over_the_size_limit_is_refused_unread(tmp_path):
    p = tmp_path / "big.yaml"
    p.write_text("model: demo\n" + "#" * MAX_CONFIG_BYTES + "\n")
    with pytest.raises(ValueError, match=r"big.yaml' is larger than 1,000,000 bytes"):
        load_config(p)


def test_a_folder_is_not_a_config_file(tmp_path):
    with pytest.raises(ValueError, match="is not a regular file"):
        load_config(tmp_path)


@pytest.mark.parametrize("text, expect", [
    ("plan:\n  num_images: 0\n", "plan.num_images: Input should be greater than or equal to 1 (got 0)"),
    ("seed: abc\ngeneration: {num_inference_steps: -1}\n",
     "seed: Input should be a valid integer, unable to parse string as an integer (got 'abc'); "
     "generation.num_inference_steps: Input should be greater than or equal to 1 (got -1)"),
    ("storage: {key: 12345}\n", "storage.key: Input should be a valid string (got a value of type int)"),
    ("plan: [\n", "is not valid YAML: expected the node content, but found '<stream end>' (line 2, column 1)"),
])
def test_config_errors_are_one_line(tmp_path, text, expect):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ValueError) as ei:
        load_config(p)
    assert "\n" not in str(ei.value) and str(ei.value).startswith(f"config file {str(p)!r} ")
    assert expect in str(ei.value)


def test_override_errors_are_one_line():
    with pytest.raises(ValueError) as ei:
        RunConfig().with_overrides(**{"plan.num_images": 0, "generation.guidance_scale": 0.5})
    assert str(ei.value) == ("invalid setting: generation.guidance_scale must be between 1.0 (no guidance) and 100, "
                             "got 0.5; plan.num_images: Input should be greater than or equal to 1 (got 0)")
