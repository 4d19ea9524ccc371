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


VALIDATE_PROBE = """
import shutil, sys
from pathlib import Path
from typer.testing import CliRunner
from normguide.cli import app
from normguide.data.schema import write_concept_table
from normguide.demo import PIPELINE_DIR
from normguide.vocabulary import load_tokenizer, unknown_words

folder = Path(sys.argv[1])
shutil.copy(PIPELINE_DIR.parent / "samples.png", folder / "ref.png")
write_concept_table([{"concept_id": "cat", "name": "cat", "reference_uris": ["ref.png"]}], folder / "t.parquet")
result = CliRunner().invoke(app, ["validate", str(folder / "t.parquet")], env={"COLUMNS": "400"})
assert result.exit_code == 0, result.output
assert "tokenizer does not know 'cat'" in result.output, result.output
# a CLIP folder as SD 1.x ships it (vocabulary and merges, no tokenizer.json)
clip = folder / "clip"
shutil.copytree(PIPELINE_DIR / "tokenizer", clip)
(clip / "tokenizer.json").unlink()
tok = load_tokenizer(str(clip))
assert type(tok).__name__ == "CLIPTokenizer", type(tok)
assert unknown_words(tok, "a photo of a cat cup seven") == ["cat", "cup"]
print(",".join(sorted(m for m in ("torch", "diffusers", "prefect") if m in sys.modules)) or "none")
"""


def test_validate_reads_the_tokenizer_without_torch_or_diffusers(tmp_path):
    """`validate` warns of words the demo's tokenizer does not know, reading the tokenizer with
    transformers' tokenizer classes only (AutoTokenizer would import torch), also from a CLIP
    folder without tokenizer.json."""
    out = subprocess.run([sys.executable, "-c", VALIDATE_PROBE, str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "none"
