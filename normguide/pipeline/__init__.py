"""The pipeline: one dataset run as steps over an injected run context, and the local driver.

    context.py   RunContext: the config, the output store and the model, built once per run
    steps.py     prepare, load_concepts, invert, plan, generate, finalize (typed in, typed out)
    results.py   the typed records the steps return and the drivers pass around
    local.py     run_dataset: the plain sequential driver (no Prefect)

The Prefect driver (package ``normguide.flows``, folder ``flows/`` in a checkout) maps the same
steps to tasks.
"""

import importlib

#: public names and the module each lives in: imported on first use, so that importing one
#: submodule (e.g. the CLI's command modules) does not load torch through the local driver
_EXPORTS = {
    "RunContext": "context", "output_root": "context",
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
    "SeedsRecord", "output_root", "run_concept", "run_dataset",
]
