"""Tasks that open and close a run: output and model checks, the concept table, finalisation.

Each wraps one step of ``normguide.pipeline.steps`` (the recipe, ``normguide.pipeline.recipe``,
calls them through ``tasks/runner.py``). They take the run's pinned config and the flow's
snapshot of the concept table (``table``), so no task reads the table again. These are IO steps:
they retry (storage hiccups), except on configuration errors.
"""

from __future__ import annotations

from prefect import task

from normguide.config import RunConfig
from normguide.data.concept_table import TableSnapshot
from normguide.data.schema import Concept
from normguide.pipeline import EvaluationRecord, GeneratedConcept, PreparedRun, steps, throughput
from normguide.pipeline.results import RunCost
from normguide.tasks.context import retry_can_help, run_context

_IO = dict(retries=2, retry_delay_seconds=5, retry_condition_fn=retry_can_help)


@task(name="prepare-run", **_IO)
def prepare_run(config: RunConfig, table: TableSnapshot) -> PreparedRun:
    """Check the output and settings (no model, nothing written); say whether the run is complete."""
    return steps.prepare(run_context(config, table))


@task(name="check-references", **_IO)
def check_references(config: RunConfig, table: TableSnapshot, concepts: list[Concept]) -> dict[str, str]:
    """Read and decode every reference image still to invert (no model): the concepts whose
    references are bad (skipped by the run); with ``strict_references`` bad input fails here."""
    return steps.check_references(run_context(config, table), concepts)


@task(name="start-run", **_IO)
def start_run(config: RunConfig, table: TableSnapshot) -> PreparedRun:
    """Load the model (a bad model fails before any concept) and start run.json."""
    return steps.start(run_context(config, table))


@task(name="record-run-status", **_IO)
def record_run_status(config: RunConfig, table: TableSnapshot, status: str, error: str | None = None) -> None:
    """Mark run.json failed or interrupted, with the error."""
    steps.record_status(run_context(config, table), status, error)


@task(name="is-run-complete", **_IO)
def is_run_complete(config: RunConfig, table: TableSnapshot) -> bool:
    """Whether the run already has _SUCCESS for this table (a rerun is then a no-op)."""
    return steps.is_complete(run_context(config, table))


@task(name="load-concepts", **_IO)
def load_concepts(config: RunConfig, table: TableSnapshot, concept_ids: list[str] | None = None) -> list[Concept]:
    """Validate the concept table's rows (from the flow's snapshot: no read)."""
    return steps.load_concepts(run_context(config, table), concept_ids)


@task(name="find-complete-concepts", **_IO)
def find_complete_concepts(config: RunConfig, table: TableSnapshot,
                           concepts: list[Concept]) -> dict[str, GeneratedConcept]:
    """The concepts whose manifest part and images all exist and were made for their row as it
    is now (a resumed run skips them; a changed row's outputs are discarded)."""
    return steps.complete_concepts(run_context(config, table), concepts)


@task(name="find-missing-parts", **_IO)
def find_missing_parts(config: RunConfig, table: TableSnapshot, concepts: list[Concept]) -> list[str]:
    """Concept ids whose manifest part is not in storage yet (not done, failed, or never run),
    or was made for a row of the table that has changed since."""
    return steps.parts_to_redo(run_context(config, table), concepts)


@task(name="finalize-run", **_IO)
def finalize_run(config: RunConfig, table: TableSnapshot, concept_ids: list[str]) -> str:
    """Consolidate the manifest, finish run.json, write _SUCCESS last."""
    return steps.finalize(run_context(config, table), concept_ids)


@task(name="forget-shard-costs", **_IO)
def forget_shard_costs(config: RunConfig, table: TableSnapshot, shards: list[list[str]]) -> None:
    """Delete the cost records left by earlier runs of the shards about to be launched (each
    shard's concept ids), so the fan-out sums only what its own shard runs generated."""
    throughput.forget_shard_costs(run_context(config, table), shards)


@task(name="record-fan-out-cost", **_IO)
def record_fan_out_cost(config: RunConfig, table: TableSnapshot, shards: list[list[str]]) -> RunCost | None:
    """Sum the launched shards' cost records (each shard's concept ids) into run.json ``cost``,
    as a local run records its own; None (run.json left as it is) when they generated nothing."""
    ctx = run_context(config, table)
    cost = throughput.shards_cost(ctx, shards)
    if cost is not None:
        throughput.record_cost(ctx, cost)
    return cost


@task(name="wants-evaluation", **_IO)
def wants_evaluation(config: RunConfig, table: TableSnapshot, concept_names: list[str]) -> bool:
    """Whether the run is evaluated (``evaluation.enabled``, or a judge for these concepts is available)."""
    return steps.wants_evaluation(run_context(config, table), concept_names)


@task(name="evaluate-run")
def evaluate_run(config: RunConfig, table: TableSnapshot) -> EvaluationRecord:
    """Score the images per concept and method; write eval/ and publish the report as an artifact."""
    from prefect.artifacts import create_markdown_artifact

    ctx = run_context(config, table)
    record = steps.evaluate(ctx)
    report = ctx.storage.read_bytes(steps.EVAL_REPORT).decode()
    create_markdown_artifact(markdown=report, key="normguide-evaluation",
                             description=f"normguide evaluation of run {ctx.run_id} ({record.judge})")
    return record


@task(name="export-run", **_IO)
def export_run(config: RunConfig, table: TableSnapshot) -> dict[str, str]:
    """Write the configured export formats (hf, webdataset) of the finalized run."""
    return steps.export(run_context(config, table))


@task(name="write-report", **_IO)
def write_report(config: RunConfig, table: TableSnapshot, evaluation: EvaluationRecord | None = None):
    """Contact sheets, seed-norm plots, report/index.md and the dataset card README.md."""
    return steps.report(run_context(config, table), evaluation=evaluation)


def evaluate_and_publish(config: RunConfig, table: TableSnapshot, concept_names: list[str]) -> dict:
    """Steps 6 and 7 of a run (``pipeline.recipe``) for a finalized run that was made elsewhere (the
    fan-out's shards): evaluate when wanted, then exports, report and dataset card, as tasks of the
    calling flow run. Returns what goes into the caller's summary: ``evaluation`` (the record,
    JSON), ``exports``, ``card_uri``, and ``evaluation_error`` / ``report_error`` for a step that
    failed (logged; the finished dataset stays as it is)."""
    from prefect import get_run_logger

    from normguide.pipeline.recipe import error_text
    from normguide.tasks.reporting import publish_report

    logger, out, evaluation = get_run_logger(), {}, None
    if wants_evaluation(config, table, concept_names):
        try:
            evaluation = evaluate_run(config, table)
            out["evaluation"] = evaluation.model_dump(mode="json")
        except Exception as exc:  # noqa: BLE001 - reported; the dataset is complete
            logger.error("evaluation failed: %s", error_text(exc))
            out["evaluation_error"] = error_text(exc)
    try:
        out["exports"] = export_run(config, table)
        record = write_report(config, table, evaluation)
        publish_report(record)
        out["card_uri"] = record.card_uri
    except Exception as exc:  # noqa: BLE001 - reported; the dataset is complete
        logger.error("exports/report failed: %s", error_text(exc))
        out["report_error"] = error_text(exc)
    return out

