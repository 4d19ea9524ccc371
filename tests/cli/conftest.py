"""CLI tests: commands run in-process (typer's CliRunner) or as the installed ``normguide`` process.

The files that run ``normguide run --prefect`` mark themselves with ``pytestmark =
pytest.mark.usefixtures("prefect_api")`` (the session's real Prefect API, tests/conftest.py).
"""

from tests.flows.conftest import concept_dir  # noqa: F401 - the two-concept table fixture, shared with the flow tests
