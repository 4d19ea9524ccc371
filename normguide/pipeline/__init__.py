"""The pipeline: one dataset run as steps over an injected run context, and the local driver.

    context.py   RunContext: the config, the output store and the model, built once per run
    steps.py     prepare, load_concepts, invert, plan, generate, finalize (typed in, typed out)
    results.py   the typed records the steps return and the drivers pass around
    local.py     run_dataset: the plain sequential driver (no Prefect)

The Prefect driver (package ``normguide.flows``, folder ``flows/`` in a checkout) maps the same
steps to tasks.
"""

from normguide.pipeline.context import RunContext, output_root
from normguide.pipeline.local import run_concept, run_dataset
from normguide.pipeline.results import (
    ConceptOutcome,
    EvaluationRecord,
    GeneratedConcept,
    PreparedRun,
    RunSummary,
    SeedsRecord,
)

__all__ = [
    "ConceptOutcome", "EvaluationRecord", "GeneratedConcept", "PreparedRun", "RunContext", "RunSummary",
    "SeedsRecord", "output_root", "run_concept", "run_dataset",
]
