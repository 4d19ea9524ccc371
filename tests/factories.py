"""Shared test factories: tiny run configurations and a model provider that must not be called.

Import as ``from tests.factories import ...`` (pytest runs from the repository root)."""

from __future__ import annotations

from pathlib import Path

from normguide.config import RunConfig


def never_load():
    """A model provider for runs that must not load the model (complete or model-free steps)."""
    raise AssertionError("the model must not be loaded")


def tiny_config(table: Path | str, output: Path | str, *, model: str = "demo:sd1", methods=("nao",),
                num_images: int = 2, reconstruction: bool = False, batch_size: int = 2,
                guidance_scale: float | None = None, **overrides) -> RunConfig:
    """A run of the tiny random-weight demo build: 2 inversion and 2 generation steps.

    Args:
        table, output: the concept table and the output root.
        model, methods, num_images, reconstruction, batch_size, guidance_scale: the settings the
            tests vary most; ``overrides`` are dotted paths (``"evaluation.enabled": False``) or
            top-level fields (``run_id="nightly"``), as :meth:`RunConfig.with_overrides` takes.
    """
    generation = {"num_inference_steps": 2, "batch_size": batch_size}
    if guidance_scale is not None:
        generation["guidance_scale"] = guidance_scale
    return RunConfig.model_validate({
        "concepts": str(table), "output": str(output), "model": model,
        "inversion": {"num_inference_steps": 2, "reconstruction": reconstruction},
        "generation": generation,
        "plan": {"methods": list(methods), "num_images": num_images},
    }).with_overrides(**overrides)
