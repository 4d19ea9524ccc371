"""The pipeline: one dataset run as steps over an injected run context, the recipe that orders
them, and the local driver. Each stage of the data flow has its module:

    context.py     RunContext: the settings, the concept table (read once), the output store
                   and the model, built once per run
    steps.py       prepare, start, load_concepts, invert, plan, generate, finalize
    resume.py      what of a run is already done, damaged or stale (resume by content)
    evaluation.py  evaluate the finished images (eval/)
    publish.py     exports, report and dataset card
    recipe.py      the run's recipe, written once, over a Runner; the LocalRunner
    local.py       run_dataset: the plain sequential driver (no Prefect)
    results.py     the typed records the steps return and the drivers pass around

The Prefect driver (package ``normguide.flows``, folder ``flows/`` in a checkout) runs the same
recipe with a Prefect runner (``tasks/runner.py``): each step a task.
"""

from normguide.pipeline.context import RunContext, output_root, read_table, resolved_run_id
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
    "SeedsRecord", "output_root", "read_table", "resolved_run_id", "run_concept", "run_dataset",
]
