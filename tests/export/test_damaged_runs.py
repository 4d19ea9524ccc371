"""Damage made visible (issue 25, second bullet): a complete run whose images were deleted,
emptied or altered is DAMAGED in ``normguide show`` (a quick check: listings and sizes only),
and ``normguide export`` / ``normguide evaluate`` fail with one line naming every damaged file
instead of "object not found"; on local disk and S3."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from normguide.cli import app


@pytest.fixture(params=["local", "s3"])
def damaged_copy(request):
    """(storage, extra CLI args) of a fresh copy of the export tests' finished run (two
    concepts, 12 images) on each backend."""
    if request.param == "local":
        _, ctx = request.getfixturevalue("run_copy")
        return ctx.storage, []
    _, ctx, _ = request.getfixturevalue("s3_run_copy")
    s3_server, monkeypatch = request.getfixturevalue("s3_server"), request.getfixturevalue("monkeypatch")
    for k, v in s3_server.aws_env.items():
        monkeypatch.setenv(k, v)
    return ctx.storage, ["--endpoint-url", s3_server.endpoint_url]


def _cli(*args):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "400"})


def test_show_export_and_evaluate_name_missing_and_empty_images(damaged_copy):
    st, endpoint = damaged_copy
    res = _cli("show", st.root, *endpoint)
    assert res.exit_code == 0 and "status: COMPLETE" in res.output and "quick check passed" in res.output, res.output

    alpha = sorted(st.list("images/alpha"))
    beta = sorted(st.list("images/beta.x"))
    st.delete([alpha[0]])
    st.write_bytes(beta[1], b"")
    res = _cli("show", st.root, *endpoint)
    assert res.exit_code == 1, res.output
    assert "status: DAMAGED (_SUCCESS written, but 2 of its 12 image(s) are missing or empty: " in res.output
    assert f"{alpha[0]} (missing)" in res.output and f"{beta[1]} (empty (0 bytes))" in res.output, res.output

    for command in ("export", "evaluate"):
        res = _cli(command, st.root, *endpoint)
        error = [line for line in res.output.splitlines() if line.strip()]
        assert res.exit_code == 2 and len(error) == 1, res.output  # one line, no stack trace
        assert error[0].startswith(f"error: cannot {command} run at {st.root}: it is damaged, 2 file(s)"), error
        assert f"{alpha[0]} (missing)" in error[0] and f"{beta[1]} (empty (0 bytes))" in error[0], error
        assert "Traceback" not in res.output
    assert not st.list("hf") and not st.list("webdataset") and not st.list("eval")


def test_export_and_evaluate_name_altered_images(damaged_copy):
    st, endpoint = damaged_copy
    alpha = sorted(st.list("images/alpha"))
    st.write_bytes(alpha[1], st.read_bytes(alpha[1])[:50])  # truncated: the quick check cannot see it
    assert "status: COMPLETE" in _cli("show", st.root, *endpoint).output
    for command in ("export", "evaluate"):
        res = _cli(command, st.root, *endpoint)
        assert res.exit_code == 2 and f"cannot {command} run at {st.root}: it is damaged, 1 file(s)" in res.output, res.output
        assert f"{alpha[1]} (sha" in res.output and "Traceback" not in res.output, res.output


def test_show_names_a_missing_manifest(damaged_copy):
    st, endpoint = damaged_copy
    st.delete(["manifest.parquet"])
    res = _cli("show", st.root, *endpoint)
    assert res.exit_code == 1 and "status: DAMAGED (_SUCCESS written, but its manifest.parquet is missing" in res.output, res.output
