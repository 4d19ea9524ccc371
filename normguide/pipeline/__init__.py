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

import importlib

#: public names and the module each lives in: imported on first use, so that importing one
#: submodule (e.g. the CLI's command modules) does not load torch through the local driver
_EXPORTS = {
    "RunContext": "context", "output_root": "context", "read_table": "context",
    "resolved_run_id": "context",
    "run_concept": "local", "run_dataset": "local",
    "ConceptOutcome": "results", "EvaluationRecord": "results", "GeneratedConcept": "results",
    "PreparedRun": "results", "RunSummary": "results", "SeedsRecord": "results",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"normguide.pipeline.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'normguide.pipeline' has no attribute {name!r}")


__all__ = [
    "ConceptOutcome", "EvaluationRecord", "GeneratedConcept", "PreparedRun", "RunContext", "RunSummary",
    "SeedsRecord", "output_root", "read_table", "resolved_run_id", "run_concept", "run_dataset",
]
