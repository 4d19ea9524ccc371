"""deployments/ against a real Prefect server: pools, prefect.yaml, workers, ad hoc and fan-out runs.

One server for the module (own port, PREFECT_HOME and SQLite database in a temporary
directory), the work pools made from the template files with the ``prefect`` CLI, the
deployments made with ``prefect deploy --all --prefect-file deployments/prefect.yaml``, two
process workers for the generation runs and one for the fan-out parents. The flow runs use the
demo model with tiny settings. The stack is stopped in the fixture's teardown, pass or fail.
"""

from __future__ import annotations

import json
import random
import re
import time
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pytest
from normguide.deployments.register import NIGHTLY_CONFIG, POOLS, deployment_specs
from normguide.deployments.steps import run_config_parameters
from PIL import Image

from normguide.data.schema import write_concept_table

from .conftest import REPO, PrefectStack

pytestmark = pytest.mark.slow  # the slow tier (pyproject.toml)

GPU_SLOTS = 1  # one "device" in this test: GPU tasks of both shards must take turns
IMAGES = 2


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> PrefectStack:
    stack = PrefectStack(tmp_path_factory.mktemp("prefect-home"))
    try:
        stack.start_server()
        # the pools from the template files, and the limit on the `gpu` task tag (as the README
        # says: `python -m deployments.register pools` / `gpu-limit`, one interpreter for both)
        stack.python("from normguide.deployments.register import create_work_pools, set_gpu_limit; "
                     f"create_work_pools(); set_gpu_limit({GPU_SLOTS})")
        stack.cli("deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
        stack.start_worker("worker-1", "normguide-cpu", queue="default")
        stack.start_worker("worker-2", "normguide-cpu", queue="default")
        stack.start_worker("worker-orchestration", "normguide-cpu", queue="orchestration")
        yield stack
    finally:
        stack.close()


def _reference(path: Path, seed: int) -> None:
    rng = random.Random(seed)
    img = Image.new("RGB", (64, 64), tuple(rng.randrange(256) for _ in range(3)))
    for _ in range(4):
        x, y = rng.randrange(48), rng.randrange(48)
        img.paste(tuple(rng.randrange(256) for _ in range(3)), (x, y, x + 8 + rng.randrange(16), y + 8 + rng.randrange(16)))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _concept_table(root: Path, concept_ids: list[str]) -> Path:
    rows = []
    for k, cid in enumerate(concept_ids):
        refs = [f"refs/{cid}/{i}.png" for i in range(2)]
        for i, ref in enumerate(refs):
            _reference(root / ref, seed=100 * k + i)
        rows.append({"concept_id": cid, "name": cid, "reference_uris": refs})
    write_concept_table(rows, root / "concepts.parquet")
    return root / "concepts.parquet"


def _config(concepts: Path, output: Path, run_id: str) -> dict:
    return {
        "concepts": str(concepts),
        "output": str(output),
        "run_id": run_id,
        "model": "demo",
        "inversion": {"num_inference_steps": 2, "reconstruction": False},
        "generation": {"num_inference_steps": 2, "guidance_scale": 2.0, "batch_size": 2},
        "plan": {"methods": ["nao"], "num_images": IMAGES},
    }


def _run_deployment(stack: PrefectStack, name: str, params: dict, *, cli: bool = False) -> str:
    """Start a run of deployment ``name``: with `prefect deployment run`, or the REST API (faster)."""
    if cli:
        out = stack.cli("deployment", "run", name, "--params", json.dumps(params))
        match = re.search(r"UUID:\s*([0-9a-f-]{36})", out)
        assert match, out
        return match.group(1)
    deployment = stack.api("GET", f"/deployments/name/{name}")
    return stack.api("POST", f"/deployments/{deployment['id']}/create_flow_run", json={"parameters": params})["id"]


def _flow_runs(stack: PrefectStack, **flow_run_filter) -> list[dict]:
    return stack.api("POST", "/flow_runs/filter", json={"flow_runs": flow_run_filter, "sort": "START_TIME_ASC"})


def _assert_completed(stack: PrefectStack, flow_run: dict) -> None:
    assert flow_run["state"]["type"] == "COMPLETED", (
        f"{flow_run['name']}: {flow_run['state']['type']} {flow_run['state'].get('message')}\n{stack.logs()}"
    )


def _submitted_by(stack: PrefectStack, flow_run_id: str) -> str | None:
    for worker in ("worker-1", "worker-2"):
        if f"submitting flow run '{flow_run_id}'" in stack.log(worker, tail=10**7):
            return worker
    return None


# -- the pools and the deployments as the server holds them -----------------------------------
def test_pools_are_created_from_the_template_files(stack):
    from prefect.utilities.templating import apply_values

    for spec in POOLS.values():
        pool = stack.api("GET", f"/work_pools/{spec.name}")
        assert pool["type"] == spec.type
        assert pool["base_job_template"] == spec.base_job_template()

    # what a worker would render with the defaults (Prefect's own templating)
    def rendered(name: str) -> dict:
        template = stack.api("GET", f"/work_pools/{name}")["base_job_template"]
        defaults = {k: v["default"] for k, v in template["variables"]["properties"].items() if "default" in v}
        return apply_values(template["job_configuration"], defaults)

    pod = rendered("normguide-gpu-kubernetes")["job_manifest"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert container["envFrom"] == [{"secretRef": {"name": "normguide-s3", "optional": False}}]
    assert container["image"] and container["workingDir"] == "/opt/normguide"

    docker = rendered("normguide-gpu-docker")["container_create_kwargs"]
    assert docker["device_requests"] == [{"driver": "nvidia", "device_ids": ["0"], "capabilities": [["gpu"]]}]


def _check_deployments(stack: PrefectStack) -> dict[str, str]:
    on_server = {(d["name"], d["work_pool_name"], d["work_queue_name"]): d
                 for d in stack.api("POST", "/deployments/filter", json={})}
    assert len(on_server) == len(deployment_specs())
    for spec in deployment_specs():
        d = on_server[(spec.name, spec.pool, spec.queue)]
        assert d["entrypoint"] == spec.flow_entrypoint
        assert d["parameters"] == spec.parameters
        assert [(s["schedule"].get("cron"), s["schedule"].get("timezone"), s["active"]) for s in d["schedules"]] == (
            [(spec.cron, spec.timezone, spec.schedule_active)] if spec.cron else [])
        (pull,) = d["pull_steps"]
        directory = pull["prefect.deployments.steps.set_working_directory"]["directory"]
        assert directory == ("/opt/normguide" if spec.in_image else str(REPO)), spec
    return {d["name"] + "@" + d["work_queue_name"]: d["id"] for d in on_server.values()}


def test_prefect_yaml_and_python_module_define_the_same_deployments(stack):
    from_yaml = _check_deployments(stack)  # made by `prefect deploy` in the fixture
    out = stack.python("import json; from normguide.deployments.register import deploy; print(json.dumps(deploy()))")
    assert len(json.loads(out.strip().splitlines()[-1])) == len(deployment_specs())
    assert _check_deployments(stack) == from_yaml  # the same deployments, updated in place


def test_scheduled_deployment_reads_back_with_timezone_and_next_runs(stack):
    nightly = stack.api("GET", "/deployments/name/generate-dataset/nightly")
    (schedule,) = nightly["schedules"]
    assert schedule["active"] is True
    assert schedule["schedule"]["cron"] == "0 2 * * *"
    assert schedule["schedule"]["timezone"] == "Europe/Berlin"
    assert nightly["parameters"] == run_config_parameters(NIGHTLY_CONFIG)
    assert nightly["parameters"]["config"]["run_id"] == "nightly"

    # next run times: the server's scheduler creates them (every 2 s here)
    deadline = time.monotonic() + 60
    while not (runs := _flow_runs(stack, deployment_id={"any_": [nightly["id"]]}, state={"type": {"any_": ["SCHEDULED"]}})):
        assert time.monotonic() < deadline, "the scheduler created no runs for generate-dataset/nightly"
        time.sleep(1)
    berlin = ZoneInfo("Europe/Berlin")
    starts = sorted(datetime.fromisoformat(r["expected_start_time"]).astimezone(berlin) for r in runs)
    assert all((t.hour, t.minute) == (2, 0) for t in starts), starts
    assert starts[0] - datetime.now(berlin) <= timedelta(days=1)
    assert all((b.date() - a.date()).days == 1 for a, b in zip(starts, starts[1:])), starts

    # the sharded variant ships with its schedule paused: no runs
    sharded = stack.api("GET", "/deployments/name/generate-dataset-fan-out/nightly-sharded")
    assert [s["active"] for s in sharded["schedules"]] == [False]
    assert not _flow_runs(stack, deployment_id={"any_": [sharded["id"]]})

    # pausing the schedule (README) removes the upcoming runs; the test's workers must not run them anyway
    stack.cli("deployment", "schedule", "pause", "generate-dataset/nightly", schedule["id"])
    assert stack.api("GET", "/deployments/name/generate-dataset/nightly")["schedules"][0]["active"] is False


# -- runs on the process workers --------------------------------------------------------------
def test_adhoc_deployment_run_of_a_flow_matching_family_writes_the_local_drivers_bytes(stack, tmp_path):
    """An ad hoc deployment run (the CLI's `prefect deployment run`) on a process worker writes
    the dataset; with the tiny FLUX build (issue 21: a new family through the deployments), the
    same images the local driver writes."""
    from normguide.config import RunConfig
    from normguide.pipeline import run_dataset

    concepts = _concept_table(tmp_path / "in", ["alpha", "beta"])
    cfg = {**_config(concepts, tmp_path / "out", run_id="adhoc-flux"), "model": "demo:flux",
           "evaluation": {"enabled": False}}
    flow_run = stack.wait_for_flow_run(_run_deployment(stack, "generate-dataset/adhoc", {"config": cfg}, cli=True))
    _assert_completed(stack, flow_run)

    root = tmp_path / "out" / "adhoc-flux"
    assert (root / "_SUCCESS").exists()
    manifest = pd.read_parquet(root / "manifest.parquet")
    assert sorted(manifest.concept_id.unique()) == ["alpha", "beta"]
    assert len(manifest) == 2 * IMAGES and set(manifest.inverter) == {"flow-euler"}
    run_dataset(RunConfig.model_validate({**cfg, "output": str(tmp_path / "local")}))
    for name in manifest.file_name:
        assert (root / name).read_bytes() == (tmp_path / "local" / "adhoc-flux" / name).read_bytes(), name


def test_fan_out_reports_failed_shards_and_a_rerun_redoes_only_those(stack, tmp_path):
    ids = ["alpha", "beta", "gamma", "delta"]
    concepts = _concept_table(tmp_path / "in", ids)
    params = {"config": _config(concepts, tmp_path / "out", run_id="fan-out-test"), "shard_size": 2,
              "deployment": "generate-dataset/adhoc", "poll_interval_s": 1}
    root = tmp_path / "out" / "fan-out-test"
    # delta (in the second shard) fails during its concept work, past the up-front reference
    # check: a file stands where its image folder goes; gamma, in the same shard, goes on
    blocker = root / "images" / "delta"
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"in the way")

    # 1. First run: two shards on two workers; the second fails and is reported by name
    parent = stack.wait_for_flow_run(_run_deployment(stack, "generate-dataset-fan-out/adhoc", params))
    assert parent["state"]["type"] == "FAILED", stack.logs()
    assert "shard-002-of-002" in parent["state"]["message"] and "shard-001-of-002" not in parent["state"]["message"]
    shards = _flow_runs(stack, parent_flow_run_id={"any_": [parent["id"]]})
    assert sorted(r["name"] for r in shards) == ["fan-out-test-shard-001-of-002", "fan-out-test-shard-002-of-002"]
    assert {r["name"]: r["state"]["type"] for r in shards}["fan-out-test-shard-001-of-002"] == "COMPLETED"
    # both generation workers poll the queue; which takes which shard is the scheduler's call (a
    # fast-failing shard can free worker-1 before worker-2 polls), so only where they ran is checked
    assert {_submitted_by(stack, r["id"]) for r in shards} <= {"worker-1", "worker-2"}, stack.logs()
    assert not (root / "_SUCCESS").exists() and not (root / "manifest.parquet").exists()
    assert not (root / "README.md").exists() and not (root / "report").exists()  # no card for an unfinished run
    assert {p.name for p in (root / "manifest").iterdir()} == {f"part-{c}.parquet" for c in ("alpha", "beta", "gamma")}
    # the parent summed its two shards' generation into run.json (delta's failure is gamma's shard's)
    cost = json.loads((root / "run.json").read_text())["cost"]
    assert cost["images"] == 3 * IMAGES and cost["device"] == "cpu" and cost["flops_per_image"] > 0
    assert cost["scope"].startswith("the sum of 2 shards of a fan-out, on cpu")
    assert cost["images_per_s_per_device"] == pytest.approx(cost["images"] / cost["generation_seconds"])

    # 2. Rerun after the fix: only the failed shard runs, narrowed to the concept it lacks
    blocker.unlink()
    parent = stack.wait_for_flow_run(_run_deployment(stack, "generate-dataset-fan-out/adhoc", params))
    _assert_completed(stack, parent)
    (rerun,) = _flow_runs(stack, parent_flow_run_id={"any_": [parent["id"]]})
    assert rerun["name"] == "fan-out-test-shard-002-of-002"
    assert rerun["parameters"]["concept_ids"] == ["delta"] and rerun["parameters"]["finalize"] is False
    _assert_completed(stack, rerun)

    # 3. The parent consolidated every shard's parts and wrote _SUCCESS
    assert (root / "_SUCCESS").exists()
    manifest = pd.read_parquet(root / "manifest.parquet")
    assert sorted(manifest.concept_id.unique()) == sorted(ids)
    assert len(manifest) == len(ids) * IMAGES and manifest.file_name.is_unique
    # run.json's cost: this invocation's one shard (delta's images), as a local run records its own
    record = json.loads((root / "run.json").read_text())
    assert record["status"] == "complete" and record["cost"]["images"] == IMAGES
    assert record["cost"]["scope"].startswith("the sum of 1 shard of a fan-out, on cpu")
    assert len(list((root / "timings").glob("cost-*.json"))) == 3  # each shard run's own record stays
    # the parent wrote the report and the dataset card, as a whole run does; the card carries the cost
    assert (root / "report" / "index.html").is_file() and (root / "report" / "index.md").is_file()
    card_cost = (root / "README.md").read_text().split("## Cost", 1)[1].split("\n## ", 1)[0]
    assert "the sum of 1 shard of a fan-out" in card_cost and f"generation: {IMAGES} image(s)" in card_cost


def test_gpu_tasks_took_turns_and_left_no_slot_behind(stack):
    limit = stack.api("GET", "/v2/concurrency_limits/tag:gpu")
    assert limit["limit"] == GPU_SLOTS
    assert limit["active_slots"] == 0, limit

    runs = stack.api("POST", "/task_runs/filter",
                     json={"task_runs": {"tags": {"all_": ["gpu"]}, "state": {"type": {"any_": ["COMPLETED"]}}}})
    spans = sorted((datetime.fromisoformat(r["start_time"]), datetime.fromisoformat(r["end_time"])) for r in runs)
    assert len(spans) >= 6  # one concept task (invert, plan, generate) per concept generated above
    overlaps = [(a, b) for a, b in zip(spans, spans[1:]) if b[0] < a[1]]
    assert not overlaps, f"GPU task runs overlapped despite a limit of {GPU_SLOTS}: {overlaps}"
