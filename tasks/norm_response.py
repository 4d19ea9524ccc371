"""The norm response as one GPU task: ``normguide.pipeline.norm_response.run_norm_response``
(the library call the ``normguide norm-response`` command makes), so both write the same bytes."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NONE

from normguide.config import RunConfig


# tag gpu: it loads the model and generates, like generate-concepts (the `gpu` concurrency limit)
@task(name="measure-norm-response", tags=["gpu"], cache_policy=NONE)
def measure_norm_response(config: RunConfig, *, judge: str | None = None, radii: list[float] | None = None,
                          num_random: int = 12, steps: int | None = 25, output: str | None = None,
                          concept_ids: list[str] | None = None, batch_size: int = 64) -> dict[str, str]:
    """Measure and write (curve.parquet, curve.csv, methods.csv, inversions.csv,
    norm_response.png, verdict.md, settings.json under ``output``); publish the verdict as a
    markdown artifact. Returns ``{"output": <where>, "verdict": <text>}``."""
    from normguide.pipeline.norm_response import run_norm_response
    from normguide.tasks.context import resolved_config

    result, where = run_norm_response(resolved_config(config), judge=judge, radii=radii, num_random=num_random, steps=steps,
                                      output=output, concept_ids=concept_ids, batch_size=batch_size)
    create_markdown_artifact(markdown=f"# Norm response of {config.model}\n\n{result.verdict}\n\nWritten: `{where}/`\n",
                             key="normguide-norm-response", description=f"norm response of {config.model}")
    return {"output": where, "verdict": result.verdict}
