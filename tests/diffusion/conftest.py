"""Tiny real diffusers/transformers pipelines, no network: fixtures shared by the diffusion tests."""

import os

# Before anything imports huggingface_hub: nothing in these tests may reach the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from normguide.diffusion import get_pipeline


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    if not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def demo():
    """The cached demo model of each family on CPU: demo("sd1"), demo("sdxl"), ..."""
    return lambda family="sd1": get_pipeline(f"demo:{family}")


def make_images(n: int, *, size=(80, 64), seed: int = 0) -> list[Image.Image]:
    """n small deterministic RGB images: a colour gradient plus noise, not square (exercises cropping)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    images = []
    for i in range(n):
        base = np.stack([xx * 255 / w, yy * 255 / h, np.full_like(xx, 40 * (i + 1) % 256)], axis=-1)
        noisy = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        images.append(Image.fromarray(noisy, "RGB"))
    return images


@pytest.fixture
def images():
    return make_images(2)


@pytest.fixture(name="make_images")
def make_images_fixture():
    return make_images


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These models are tiny: a second intra-op thread buys nothing, and on a shared, loaded machine
    OpenMP threads waiting on each other made the suite up to 10x slower. Restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
