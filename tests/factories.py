"""Shared test factories: tiny run configurations and a model provider that must not be called.

Import as ``from tests.factories import ...`` (pytest runs from the repository root)."""

from __future__ import annotations

from pathlib import Path

from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from tests.helpers import make_reference


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


def reference_table(table: Path, counts, *, seed, refs_dir: Path | None = None) -> Path:
    """A concept table at ``table`` with ``counts`` ((concept id, number of references) pairs; the
    name is the id) of small random references ``<refs_dir>/<id>/<i>.png`` (default: the
    table's folder), each drawn with ``seed(concept_id, i)``; returns ``table``."""
    refs_dir = table.parent if refs_dir is None else refs_dir
    rows = []
    for cid, n in counts:
        refs = [str(make_reference(refs_dir / cid / f"{i}.png", seed=seed(cid, i))) for i in range(n)]
        rows.append({"concept_id": cid, "name": cid, "reference_uris": refs})
    write_concept_table(rows, table)
    return table
