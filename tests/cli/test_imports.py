"""`normguide --help` (and every command's --help) starts without torch or diffusers (issue 24)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import sys
from typer.testing import CliRunner
from normguide.cli import app
for args in (["--help"], ["run", "--help"], ["validate", "--help"], ["show", "--help"], ["export", "--help"]):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, (args, result.output)
heavy = sorted(m for m in ("torch", "diffusers", "transformers", "prefect") if m in sys.modules)
print(",".join(heavy) or "none")
"""


def test_help_imports_no_torch_diffusers_transformers_or_prefect():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "none"


CONFIG_PROBE = """
import sys
from normguide.config import RunConfig
RunConfig(plan={"methods": ["nao", "circle"]}, inversion={"inverter": "ddim"})
print(",".join(sorted(m for m in ("torch", "diffusers", "transformers", "prefect") if m in sys.modules)) or "none")
"""


def test_validating_a_config_imports_no_torch():
    """The config checks method and inverter names against torch-free tables
    (normguide.data.methods, normguide.diffusion.inverters behind a lazy package)."""
    out = subprocess.run([sys.executable, "-c", CONFIG_PROBE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "none"
