"""Fixtures for the evaluation tests: a tiny CLIP model saved to disk (random weights, locally built
tokenizer, no download) and small helpers for synthetic images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def _bytes_to_unicode() -> list[str]:
    """CLIP/GPT-2 byte-level alphabet (256 printable characters)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes, extra = printable[:], 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


_MERGES = (("a", "n"), ("o", "f</w>"), ("p", "h"), ("ph", "o"), ("pho", "t"), ("phot", "o</w>"))


def build_tiny_clip(root: Path) -> Path:
    """A tiny random-weight CLIP (text + vision), its tokenizer and image processor, saved with
    ``save_pretrained`` into ``root``."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    from normguide.evaluation.judges import _image_processor_class

    alphabet = _bytes_to_unicode()
    tokens = alphabet + [s + "</w>" for s in alphabet] + ["".join(p) for p in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(tokens)}
    src = root / "tokenizer-src"
    src.mkdir(parents=True)
    (src / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (src / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in _MERGES) + "\n", encoding="utf-8")
    tokenizer = CLIPTokenizer.from_pretrained(src, local_files_only=True, model_max_length=77)

    n = len(tokenizer)
    config = CLIPConfig(
        text_config=dict(
            vocab_size=n, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            max_position_embeddings=77, bos_token_id=n - 2, eos_token_id=n - 1, pad_token_id=n - 1,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            image_size=32, patch_size=8,
        ),
        projection_dim=16,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = CLIPModel(config)
    out = root / "tiny-clip"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _image_processor_class()(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory) -> Path:
    return build_tiny_clip(tmp_path_factory.mktemp("clip"))


def solid(rgb, size: int = 16, noise: float = 0.0, seed: int = 0) -> Image.Image:
    """A solid-colour RGB image, optionally with Gaussian pixel noise (std in grey levels)."""
    arr = np.full((size, size, 3), rgb, dtype=np.float64)
    if noise:
        arr += np.random.default_rng(seed).normal(0.0, noise, arr.shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")
