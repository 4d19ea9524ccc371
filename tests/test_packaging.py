"""Packaging: everything installs under the ``normguide`` namespace, nothing generic at the top."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAPPED = {"normguide.flows": "flows", "normguide.tasks": "tasks", "normguide.deployments": "deployments"}


def test_package_list_covers_every_package_folder():
    tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert tool["package-dir"] == MAPPED
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "normguide").rglob("__init__.py")}
    found |= {name for name, folder in MAPPED.items() if (REPO / folder / "__init__.py").exists()}
    assert set(tool["packages"]) == found


@pytest.mark.slow
def test_wheel_installs_only_under_normguide(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(REPO)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("normguide-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"normguide"}
    for module in ("normguide/flows/generate_dataset.py", "normguide/flows/fan_out.py", "normguide/tasks/concepts.py",
                   "normguide/deployments/register.py", "normguide/pipeline/steps.py"):
        assert module in names
    # the demo's weights, its judge and the shipped example travel inside the package
    for data in ("normguide/demo/weights/pipeline/model_index.json", "normguide/demo/weights/classifier/model.safetensors",
                 "normguide/demo/example/concepts.parquet", "normguide/demo/example/references/two/00.png"):
        assert data in names
    # the deployment definitions that normguide.deployments.register reads
    for data in ("normguide/deployments/prefect.yaml", "normguide/deployments/configs/nightly.yaml",
                 "normguide/deployments/work-pools/process.json", "normguide/deployments/work-pools/kubernetes-gpu.json",
                 "normguide/deployments/work-pools/docker-gpu.json"):
        assert data in names, data

    # installed from the wheel (not editable), `normguide run` works from any directory: the
    # example, the demo model and its judge come from the installed package
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PYTHONPATH=str(site), PREFECT_HOME=str(tmp_path / "prefect-home"))
    code = ("import normguide, sys; assert normguide.__file__.startswith(sys.argv[1]), normguide.__file__; "
            "from normguide.cli import main; sys.argv = sys.argv[1:]; main()")
    res = subprocess.run([sys.executable, "-c", code, str(site), "run", "--num-images", "1", "--steps", "2",
                          "--inversion-steps", "2", "--no-reconstruction"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr
    assert len(list((elsewhere / "outputs").glob("run-*/_SUCCESS"))) == 1

    # the register command finds its files in the installed package and checks them (no server)
    res = subprocess.run([sys.executable, "-m", "normguide.deployments.register", "list"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"definitions: {site / 'normguide' / 'deployments' / 'prefect.yaml'}" in res.stdout
    assert "deployment nightly of flows/generate_dataset.py:generate_dataset on normguide-cpu" in res.stdout
    assert "work pool normguide-gpu-kubernetes (kubernetes)" in res.stdout
