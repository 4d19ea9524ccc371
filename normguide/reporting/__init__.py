"""Reporting: what a person looks at after a run (DESIGN.md, data flow step 6).

- :func:`write_report` (``write.py``): per concept a contact sheet (``sheets.py``: references,
  then each method's images, labelled) and a seed-norm plot (``norms.py``: z-scores of the
  inverted and planned seeds against the prior's typical band), ``report/index.md`` linking them,
  and the dataset card ``README.md`` (``card.py``, Hugging Face dataset-card format) at the run
  root. Returns a :class:`ReportRecord` (``records.py``).
- :func:`run_status` / :func:`show_text` (``show.py``): the summary of an existing run, finished or
  not (the ``normguide show`` command is in ``normguide/cli/runs.py``).

Needs a finished run's files only: no model is loaded; storage is local or S3 through the run's
:class:`~normguide.pipeline.RunContext`. The Prefect side (artifacts) is ``tasks/reporting.py``.
"""

import importlib

#: public names and their modules, imported on first use (``normguide show --help`` and the CLI's
#: command registration must not load the plotting and seeds stack, nor torch)
_EXPORTS = {
    "CARD_KEY": "records", "INDEX_KEY": "records", "ConceptReport": "records", "ReportRecord": "records",
    "norms_key": "records", "sheet_key": "records", "index_markdown": "write", "write_report": "write",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"normguide.reporting.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'normguide.reporting' has no attribute {name!r}")


__all__ = [
    "CARD_KEY",
    "INDEX_KEY",
    "ConceptReport",
    "ReportRecord",
    "index_markdown",
    "norms_key",
    "sheet_key",
    "write_report",
]
