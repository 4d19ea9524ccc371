"""The built-in demo pipeline: tiny, SD-shaped, bit-identical on every build, offline."""

import hashlib
import os
import subprocess
import sys

import pytest
import torch

from normguide.diffusion import DEMO_FAMILIES, build_demo_pipeline, load_pipeline
from normguide.diffusion.loading import RANDOM_DEMO_NOTE, TRAINED_DEMO_NOTE

_WEIGHT_HASH = """
import hashlib, torch
from normguide.diffusion import build_demo_pipeline
pipe = build_demo_pipeline("sd1")
h = hashlib.sha256()
for name in ("unet", "vae", "text_encoder"):
    for key, value in sorted(getattr(pipe, name).state_dict().items()):
        h.update(key.encode()); h.update(value.contiguous().numpy().tobytes())
print(h.hexdigest())
"""


def _weights_hash(pipe) -> str:
    h = hashlib.sha256()
    for name in ("unet", "vae", "text_encoder"):
        for key, value in sorted(getattr(pipe, name).state_dict().items()):
            h.update(key.encode())
            h.update(value.contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_demo_weights_identical_across_builds_and_processes():
    first, second = build_demo_pipeline("sd1"), build_demo_pipeline("sd1")
    assert _weights_hash(first) == _weights_hash(second)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", _WEIGHT_HASH], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip().splitlines()[-1] == _weights_hash(first)


def test_demo_build_leaves_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    build_demo_pipeline("sd2")
    assert torch.equal(torch.rand(3), expected)


def test_demo_families_differ_where_their_architectures_do():
    sdxl = build_demo_pipeline("sdxl")
    assert type(sdxl).__name__ == "StableDiffusionXLPipeline"
    assert sdxl.unet.config.addition_embed_type == "text_time"
    sd2 = build_demo_pipeline("sd2-v")
    assert sd2.unet.config.use_linear_projection
    assert sd2.scheduler.config.prediction_type == "v_prediction"


def test_demo_tokenizer_is_local_and_clip_shaped():
    pipe = build_demo_pipeline("sd1")
    tok = pipe.tokenizer
    ids = tok("a photo of the thing").input_ids
    assert ids[0] == tok.bos_token_id and ids[-1] == tok.eos_token_id
    assert max(ids) < pipe.text_encoder.config.vocab_size
    assert tok.model_max_length == 77
    assert len(ids) < len("a photo of the thing") + 2  # the merges fire


def test_demo_loaded_model_describes_itself(demo):
    m = demo("sd1")
    assert (m.model_id, m.revision, m.family, m.is_demo) == ("demo:sd1", "demo-sd1-v1", "sd1", True)
    assert (m.resolution, m.seed_shape, m.d) == (64, (4, 8, 8), 256)
    assert m.scheduler == "DDIMScheduler" and m.dtype == torch.float32 and m.device == torch.device("cpu")
    assert m.note == RANDOM_DEMO_NOTE and "noise" in m.note
    v = load_pipeline("demo:sd2-v")
    assert (v.model_id, v.family, v.revision, v.note) == ("demo:sd2-v", "sd2-v", "demo-sd2-v-v1", RANDOM_DEMO_NOTE)
    # Plain "demo" is no longer a random build: it is the shipped trained digits model (tests/demo).
    plain = load_pipeline("demo")
    assert (plain.model_id, plain.is_demo, plain.note) == ("demo", True, TRAINED_DEMO_NOTE)
    assert plain.revision.startswith("demo-digits-") and plain.family == "sd1" and plain.resolution == 32


def test_demo_tokenizer_words_become_single_tokens():
    from normguide.diffusion.demo import build_demo_tokenizer, demo_tokenizer_files

    base_vocab, base_merges = demo_tokenizer_files()
    assert len(base_vocab) == 531  # the random builds' tokenizer is unchanged by the option
    words = ("a", "handwritten", "digit", "three", "thirteen", "photo")
    vocab, merges = demo_tokenizer_files(words)
    assert merges[: len(base_merges)] == base_merges  # extra merges only come after the base ones
    assert list(vocab)[-2:] == ["<|startoftext|>", "<|endoftext|>"] and len(set(vocab.values())) == len(vocab)
    tok = build_demo_tokenizer(words)
    for word in words:
        ids = tok(word).input_ids
        assert tok.convert_ids_to_tokens(ids) == ["<|startoftext|>", word + "</w>", "<|endoftext|>"]
    assert tok("A  Handwritten THREE").input_ids == tok("a handwritten three").input_ids
    # Words outside the list still tokenize (byte-level), just not as one token.
    assert len(tok("zebra").input_ids) > 3
    with pytest.raises(ValueError, match="lower-case"):
        demo_tokenizer_files(("Seven",))


@pytest.mark.parametrize("family", ["sd4", "sd1 ", ""])
def test_unknown_demo_family_is_rejected(family):
    with pytest.raises(ValueError, match="family"):
        build_demo_pipeline(family)
    with pytest.raises(ValueError, match="demo"):
        load_pipeline(f"demo:{family}")


def test_every_family_is_listed():
    assert DEMO_FAMILIES == ("sd1", "sd2", "sd2-v", "sdxl")
