"""The shipped trained demo: loads as plain "demo" through from_pretrained, draws the prompted digit."""

import glob
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from normguide.demo import PIPELINE_DIR, WEIGHTS_DIR
from normguide.demo import digits as D
from normguide.diffusion import ModelLoadError, generate_images, load_pipeline, loading
from normguide.diffusion.loading import RANDOM_DEMO_NOTE, TRAINED_DEMO_NOTE, content_revision

_REPO = Path(__file__).resolve().parents[2]
# Four common digits (3 looks like the rare 5 and 8), ten random seeds each, guidance 3, 50 DDIM
# steps (the bar: >= 90 %). All ten digits, 50 seeds each: weights/TRAINING.md.
_CLASSES = (0, 3, 4, 7)
_SEEDS = 10

_BYTES = """
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[1]))
from normguide.diffusion import generate_images, load_pipeline
m = load_pipeline("demo")
seeds = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(11))
ims = [im for b in generate_images(m, seeds, "a handwritten digit three", guidance_scale=3.0) for im in b]
print(hashlib.sha256(b"".join(im.tobytes() for im in ims)).hexdigest())
"""


def _generate(model, label: int, seed: int, n: int, guidance: float = 3.0):
    seeds = torch.randn(n, *model.seed_shape, generator=torch.Generator().manual_seed(seed))
    return [im for b in generate_images(model, seeds, D.prompt_for(label), num_inference_steps=50,
                                        guidance_scale=guidance, batch_size=n) for im in b]


def test_plain_demo_is_the_shipped_digits_model(trained_demo):
    m = trained_demo
    assert (m.model_id, m.is_demo, m.note) == ("demo", True, TRAINED_DEMO_NOTE)
    assert "digits" in m.note and "not a photo model" in m.note
    assert re.fullmatch(r"demo-digits-[0-9a-f]{16}", m.revision)
    assert m.revision == "demo-digits-" + content_revision(PIPELINE_DIR)
    assert (m.family, m.resolution, m.seed_shape, m.d) == ("sd1", 32, (4, 8, 8), 256)
    assert type(m.pipe).__name__ == "StableDiffusionPipeline" and m.scheduler == "DDIMScheduler"
    assert m.pipe.scheduler.config.prediction_type == "epsilon"
    assert m.pipe.scheduler.config.beta_schedule == "scaled_linear"
    # Every prompt word is one token, so the prompt is what the model was trained on.
    ids = m.pipe.tokenizer(D.prompt_for(7)).input_ids
    assert len(ids) == 6 and m.pipe.tokenizer.convert_ids_to_tokens(ids[1:5]) == [
        "a</w>", "handwritten</w>", "digit</w>", "seven</w>"]


def test_the_random_builds_say_they_are_noise():
    m = load_pipeline("demo:sd2-v")
    assert (m.model_id, m.is_demo, m.note, m.family) == ("demo:sd2-v", True, RANDOM_DEMO_NOTE, "sd2-v")


def test_weights_are_safetensors_and_small():
    files = [p for p in WEIGHTS_DIR.rglob("*") if p.is_file()]
    weights = [p for p in files if p.suffix in (".safetensors", ".bin", ".pt", ".ckpt")]
    assert weights and all(p.suffix == ".safetensors" for p in weights)
    assert {p.parent.name for p in weights} == {"unet", "vae", "text_encoder", "classifier", "features"}
    assert sum(p.stat().st_size for p in files) < 10 * 2**20


def test_weights_are_package_data():
    """Every shipped weight file is matched by pyproject's package-data, so `pip install .` (not
    editable) carries them."""
    config = tomllib.loads((_REPO / "pyproject.toml").read_text(encoding="utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["normguide.demo"]
    package = WEIGHTS_DIR.parent
    matched = {m for g in globs for m in glob.glob(g, root_dir=package, recursive=True)}  # setuptools' semantics
    for path in WEIGHTS_DIR.rglob("*"):
        if path.is_file():
            assert path.relative_to(package).as_posix() in matched, path


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_common_digits_are_drawn_recognisably_at_guidance_3(trained_demo, judge):
    accuracies = {}
    for label in _CLASSES:
        images = _generate(trained_demo, label, seed=100 + label, n=_SEEDS)
        assert images[0].size == (32, 32)
        accuracies[label] = float((judge.predict(images) == label).mean())
    assert set(accuracies) <= set(D.COMMON_CLASSES) and min(accuracies.values()) >= 0.9, accuracies


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_generation_is_byte_deterministic_within_and_across_processes(trained_demo):
    seeds = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(11))
    runs = [[im.tobytes() for b in generate_images(trained_demo, seeds, "a handwritten digit three",
                                                    guidance_scale=3.0) for im in b] for _ in range(2)]
    assert runs[0] == runs[1]
    import hashlib

    here = hashlib.sha256(b"".join(runs[0])).hexdigest()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _BYTES, str(torch.get_num_threads())], capture_output=True, text=True,
                         env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == here


def test_missing_weights_are_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "trained_demo_dir", lambda: tmp_path)
    with pytest.raises(ModelLoadError, match="shipped weights are missing") as info:
        load_pipeline("demo")
    assert str(tmp_path) in str(info.value) and "scripts/train_demo.py" in str(info.value)


def test_training_record_says_what_was_trained(training_record):
    r = training_record
    assert not r["smoke"] and r["hparams"]["seed"] == 0
    assert r["split"]["sizes"]["generative"]["per_class"][2] == 8
    assert r["results"]["classifier_test_accuracy"] >= 0.97
    assert r["times_s"]["total_training"] > 0
    assert (WEIGHTS_DIR / "TRAINING.md").is_file()
    np.testing.assert_array_equal(sorted(r["results"]["generation_accuracy"]), ["1.0", "3.0"])
