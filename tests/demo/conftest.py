"""Fixtures for the shipped trained demo: the pipeline, the classifier, the training record.
Nothing here trains; everything is offline."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest
import torch

from normguide.demo import WEIGHTS_DIR


@pytest.fixture(scope="session")
def trained_demo():
    """``get_pipeline("demo")``: the shipped digits model on CPU, cached for the session."""
    from normguide.diffusion import get_pipeline

    return get_pipeline("demo")


@pytest.fixture(scope="session")
def judge():
    from normguide.demo.classifier import load_digit_classifier

    return load_digit_classifier()


@pytest.fixture(scope="session")
def training_record() -> dict:
    return json.loads((WEIGHTS_DIR / "TRAINING.json").read_text(encoding="utf-8"))


@pytest.fixture(autouse=True)
def _torch_threads():
    """Two intra-op threads (the machine's cores), restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(min(2, before))
    yield
    torch.set_num_threads(before)
