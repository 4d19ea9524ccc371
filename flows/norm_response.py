"""The norm response of a model as a Prefect flow: ``normguide norm-response`` on a worker (a GPU
pod for a real checkpoint), one task (``tasks/norm_response.py``, tag ``gpu``) calling the library.

Entry point for deployments: ``flows/norm_response.py:norm_response`` (deployments/prefect.yaml:
``norm-response/measure`` on the CPU pool, ``norm-response/measure-gpu`` on the GPU pool).
"""

# No ``from __future__ import annotations``: Prefect builds the parameter model from the
# annotations (see flows/generate_dataset.py).
from prefect import flow

from normguide.config import RunConfig
from normguide.masking import secrets_refused
from normguide.tasks.norm_response import measure_norm_response


@flow(name="norm-response", log_prints=True, validate_parameters=True)
def norm_response(
    config: RunConfig = RunConfig(),
    judge: str | None = None,
    radii: list[float] | None = None,
    num_random: int = 12,
    steps: int | None = 25,
    output: str | None = None,
    concept_ids: list[str] | None = None,
) -> dict[str, str]:
    """Measure the model's norm response (recognisability and diversity against the seeds'
    relative norm r) and say what it means for the seed methods (docs/norm-response.md).

    Args:
        config: The run configuration (model, concept table, guidance, inversion, seed, device).
        judge: 'digits' or a local CLIP directory; default: the run's evaluation judge.
        radii: The grid of relative norms; default 0.3, 0.5, 0.6, 0.707, 0.85, 1.0, 1.15, 1.3, 1.5.
        num_random: Random rays per concept (plus one ray per reference).
        steps: Generation steps (default 25; None: the config's generation steps).
        output: Where to write; default ``<config output>/norm-response``.
        concept_ids: Only these concepts; default all of the table.

    Returns:
        ``{"output": <where the files are>, "verdict": <the printed verdict>}``.
    """
    if secret_fields := config.parameter_secrets():
        raise ValueError(secrets_refused(secret_fields, "flow-run parameters"))
    result = measure_norm_response(config, judge=judge, radii=radii, num_random=num_random, steps=steps,
                                   output=output, concept_ids=concept_ids)
    print(result["verdict"])
    return result


if __name__ == "__main__":
    norm_response()
