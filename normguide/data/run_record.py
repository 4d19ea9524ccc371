"""``run.json``: the run's record (configuration with secrets masked, model, versions, status).

Written when a run starts, rewritten when it is finalized. A run id names one dataset, so a run
record also guards against resuming a run with settings that would change its content.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from normguide.config import RunConfig

RUN_JSON = "run.json"
SUCCESS = "_SUCCESS"


def now() -> datetime:
    return datetime.now(timezone.utc)


def versions() -> dict[str, str]:
    import diffusers
    import torch
    import transformers

    from normguide import __version__

    return {"normguide": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
            "transformers": transformers.__version__}


def dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, indent=2, sort_keys=True).encode()


def new_record(config: RunConfig, *, output_root: str, model: dict[str, Any]) -> bytes:
    """The run.json of a run that starts now (status ``running``)."""
    return dumps({
        "run_id": config.resolved_run_id(), "status": "running", "started_at": now().isoformat(),
        "finished_at": None, "output_root": output_root, "model": model, "versions": versions(),
        "concepts": None, "images": None, "config": config.public_dict(),
    })


def finished_record(data: bytes, *, concepts: list[str], images: int) -> bytes:
    """run.json ``data`` marked complete with the run's concepts and image count."""
    doc = json.loads(data)
    doc.update(status="complete", finished_at=now().isoformat(), concepts=list(concepts), images=images)
    return dumps(doc)


def check_same_content(config: RunConfig, data: bytes, where: str) -> None:
    """Refuse to resume a run whose run.json was written with content-changing settings,
    naming the fields that differ (resuming would mix two datasets under one manifest)."""
    try:
        before = RunConfig.model_validate(json.loads(data)["config"]).content_dict()
    except Exception:  # noqa: BLE001 - an unreadable record is reported as such
        raise ValueError(f"{where} is not a normguide run record; choose another output root or run_id") from None
    diff = sorted(_flat_diff(before, config.content_dict()))
    if diff:
        raise ValueError(
            f"run {config.resolved_run_id()!r} at {where} was started with different settings ({', '.join(diff)}); "
            "rerun with the original configuration to resume it, or choose another run_id"
        )


def _flat_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _flat_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]
