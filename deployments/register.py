"""The deployments of ``deployments/prefect.yaml``, made from Python; and ``serve`` for one machine.

A team picks one of the two routes; both create the same work pools and deployments::

    python -m normguide.deployments.register pools                 # work pools from deployments/work-pools/
    python -m normguide.deployments.register gpu-limit 4           # at most 4 GPU task runs at once (tag `gpu`)
    python -m normguide.deployments.register deploy --gpu-image registry/normguide-gpu:1.0
    python -m normguide.deployments.register serve --limit 1       # no workers: this process runs the flows

Run it from the checkout the process workers will use (the CPU deployments run from this
checkout's path; the GPU ones from the checkout inside the image). Everything talks to the
server in ``PREFECT_API_URL``; credentials are never part of a deployment (see README.md).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import yaml

from normguide.deployments.steps import CHECKOUT, run_config_parameters

PREFECT_YAML = CHECKOUT / "deployments" / "prefect.yaml"
FAN_OUT = "flows/fan_out.py:generate_dataset_fan_out"
NIGHTLY_CONFIG = "deployments/configs/nightly.yaml"
_STEP_OUTPUT = re.compile(r"\{\{\s*([\w-]+)\.(\w+)\s*\}\}")
IMAGE_CHECKOUT = "/opt/normguide"  # where deployments/Dockerfile puts the checkout
GPU_TAG = "gpu"  # the tag of normguide's GPU tasks (tasks/concepts.py)


@dataclass(frozen=True)
class PoolSpec:
    """A work pool made from a base job template file in deployments/work-pools/."""

    name: str
    type: str
    template: str

    def base_job_template(self) -> dict[str, Any]:
        return json.loads((CHECKOUT / "deployments" / "work-pools" / self.template).read_text())


POOLS: dict[str, PoolSpec] = {
    p.name: p
    for p in (
        PoolSpec("normguide-cpu", "process", "process.json"),
        PoolSpec("normguide-gpu-kubernetes", "kubernetes", "kubernetes-gpu.json"),
        PoolSpec("normguide-gpu-docker", "docker", "docker-gpu.json"),
    )
}


@dataclass(frozen=True)
class DeploymentSpec:
    """One deployment of prefect.yaml, as read by :func:`deployment_specs`."""

    flow_entrypoint: str
    name: str
    pool: str
    queue: str = "default"
    description: str = ""
    tags: tuple[str, ...] = ("normguide",)
    parameters: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    timezone: str | None = None
    schedule_active: bool = True
    in_image: bool = False  # runs from the checkout in the GPU image, not from this checkout


def deployment_specs() -> list[DeploymentSpec]:
    """The deployments of deployments/prefect.yaml (the one definition), read from that file.

    Parameters given as ``{{ <step id>.<key> }}`` are resolved by running the named build step
    (``run_config_parameters``) as ``prefect deploy`` does.
    """
    doc = yaml.safe_load(PREFECT_YAML.read_text())
    specs = []
    for d in doc["deployments"]:
        outputs = {}
        for step in d.get("build", doc.get("build")) or []:
            ((fn, kwargs),) = step.items()
            if fn.endswith(".run_config_parameters"):
                outputs[kwargs["id"]] = run_config_parameters(kwargs["path"])
        parameters = {}
        for key, value in (d.get("parameters") or {}).items():
            ref = _STEP_OUTPUT.fullmatch(value) if isinstance(value, str) else None
            parameters[key] = outputs[ref[1]][ref[2]] if ref else value
        schedule = (d.get("schedules") or [None])[0] or {}
        pull = d.get("pull", doc.get("pull")) or []
        in_image = any(next(iter(step.values())).get("directory") == IMAGE_CHECKOUT for step in pull)
        specs.append(DeploymentSpec(
            flow_entrypoint=d["entrypoint"], name=d["name"], pool=d["work_pool"]["name"],
            queue=d["work_pool"].get("work_queue_name", "default"), description=d.get("description", ""),
            tags=tuple(d.get("tags", ())), parameters=parameters, cron=schedule.get("cron"),
            timezone=schedule.get("timezone"), schedule_active=schedule.get("active", True), in_image=in_image,
        ))
    return specs


# -- work pools and the GPU limit ------------------------------------------------------------
def create_work_pools(names: Iterable[str] | None = None, *, overwrite: bool = True) -> list[str]:
    """Create (or update) the work pools from their template files; returns their names.

    The server validates each base job template (every placeholder of ``job_configuration``
    must be a declared variable), so a broken template file fails here.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate

    specs = [POOLS[n] for n in (names or POOLS)]
    with get_client(sync_client=True) as client:
        for spec in specs:
            client.create_work_pool(
                WorkPoolCreate(name=spec.name, type=spec.type, base_job_template=spec.base_job_template()),
                overwrite=overwrite,
            )
    return [s.name for s in specs]


def set_gpu_limit(slots: int) -> None:
    """At most ``slots`` task runs tagged ``gpu`` at once across the server (lease-based, see README)."""
    if slots < 1:
        raise ValueError(f"slots must be >= 1, got {slots}")
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.create_concurrency_limit(tag=GPU_TAG, concurrency_limit=slots)


# -- deployments --------------------------------------------------------------------------------
def _load_flow(entrypoint: str, *, from_checkout: bool):
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    if from_checkout:
        # LocalStorage: the deployment's pull step is set_working_directory(<checkout>)
        return Flow.from_source(source=str(CHECKOUT), entrypoint=entrypoint)
    return load_flow_from_entrypoint(str(CHECKOUT / entrypoint))


def _to_deployment(spec: DeploymentSpec, *, gpu_image: str | None, serve: bool = False):
    from prefect.schedules import Cron

    flow = _load_flow(spec.flow_entrypoint, from_checkout=not spec.in_image and not serve)
    schedules = [Cron(spec.cron, timezone=spec.timezone, active=spec.schedule_active)] if spec.cron else []
    kwargs: dict[str, Any] = dict(name=spec.name, description=spec.description, tags=list(spec.tags),
                                  parameters=spec.parameters, schedules=schedules)
    if serve:
        return flow.to_deployment(**kwargs)
    job_variables = {"image": gpu_image} if spec.in_image and gpu_image else {}
    deployment = flow.to_deployment(**kwargs, work_pool_name=spec.pool, work_queue_name=spec.queue,
                                    job_variables=job_variables)
    if spec.in_image:
        from prefect.runner.storage import LocalStorage

        # the checkout inside the GPU image (deployments/Dockerfile): pull step set_working_directory
        deployment.storage = LocalStorage(IMAGE_CHECKOUT)
    return deployment


def deploy(*, gpu_image: str | None = None, include_gpu: bool = True) -> dict[str, str]:
    """Create or update every deployment on the server; ``{"flow/deployment": id}``.

    The work pools must exist (:func:`create_work_pools`). ``gpu_image`` overrides the GPU
    pools' default image for the GPU deployments.
    """
    ids = {}
    with contextlib.chdir(CHECKOUT):  # entry points are relative to the checkout
        for spec in deployment_specs():
            if spec.in_image and not include_gpu:
                continue
            dep = _to_deployment(spec, gpu_image=gpu_image)
            ids[f"{dep.flow_name}/{dep.name}"] = str(dep.apply())
    return ids


def serve(*, limit: int | None = 1) -> None:
    """Run the CPU deployments (adhoc, nightly, fan-out) from this process, without work pools.

    For a single machine: ``limit`` flow runs at once (1 per GPU); the fan-out parent then
    shards onto ``generate-dataset/adhoc`` served here. Blocks until interrupted.
    """
    from prefect import serve as prefect_serve

    specs = [s for s in deployment_specs() if not s.in_image]
    with contextlib.chdir(CHECKOUT):
        deployments = []
        for spec in specs:
            if spec.flow_entrypoint == FAN_OUT:
                spec = DeploymentSpec(**{**spec.__dict__, "parameters": {**spec.parameters,
                                                                         "deployment": "generate-dataset/adhoc"}})
            deployments.append(_to_deployment(spec, gpu_image=None, serve=True))
        prefect_serve(*deployments, limit=limit)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m normguide.deployments.register", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("pools", help="create or update the work pools from deployments/work-pools/")
    p.add_argument("names", nargs="*", help=f"default: all of {', '.join(POOLS)}")
    p = sub.add_parser("gpu-limit", help="set the concurrency limit on the `gpu` task tag")
    p.add_argument("slots", type=int)
    p = sub.add_parser("deploy", help="create or update the deployments")
    p.add_argument("--gpu-image", help="image of the GPU deployments (default: the pools' image)")
    p.add_argument("--no-gpu", action="store_true", help="only the process-pool deployments")
    p = sub.add_parser("serve", help="serve the CPU deployments from this process (no workers)")
    p.add_argument("--limit", type=int, default=1, help="flow runs at once (default 1)")
    sub.add_parser("list", help="check and list the work pools and deployments these files define (no server)")
    args = parser.parse_args(argv)

    if args.command == "pools":
        unknown = sorted(set(args.names) - set(POOLS))
        if unknown:
            parser.error(f"unknown work pool(s) {unknown}; known: {sorted(POOLS)}")
        print("work pools:", ", ".join(create_work_pools(args.names or None)))
    elif args.command == "gpu-limit":
        set_gpu_limit(args.slots)
        print(f"at most {args.slots} task run(s) tagged {GPU_TAG!r} at once")
    elif args.command == "deploy":
        for name, dep_id in deploy(gpu_image=args.gpu_image, include_gpu=not args.no_gpu).items():
            print(f"{name}: {dep_id}")
    elif args.command == "serve":
        serve(limit=args.limit)
    elif args.command == "list":
        print(f"definitions: {PREFECT_YAML}")
        for pool in POOLS.values():
            pool.base_job_template()  # the template file is there and is JSON
            print(f"work pool {pool.name} ({pool.type}): {pool.template}")
        for spec in deployment_specs():  # a scheduled deployment's config file is validated here
            cfg = spec.parameters.get("config") or {}
            table = f", concepts {cfg['concepts']}" if "concepts" in cfg else (", concepts: the shipped example" if cfg else "")
            print(f"deployment {spec.name} of {spec.flow_entrypoint} on {spec.pool}"
                  + (f", cron {spec.cron!r} ({spec.timezone})" if spec.cron else "") + table)


if __name__ == "__main__":
    main()
