"""What the commands print: live progress, the run summary, the evaluation table, and what an
existing output already holds."""

from __future__ import annotations

from normguide.data import layout


def progress_reporter(console):
    """Live bars on a terminal; one line per finished stage otherwise."""
    from normguide import progress

    if console.is_terminal:
        return RichReporter(console)
    return progress.LogReporter()


class RichReporter:
    """progress.Reporter: one live bar per running stage (concept, stage, done/total, rate)."""

    def __init__(self, console):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                              TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                              console=console, transient=True)
        self._ids: dict[int, object] = {}
        self._console = console

    def __enter__(self):
        self._bars.start()
        return self

    def __exit__(self, *exc):
        self._bars.stop()

    def note(self, text: str) -> None:
        self._console.print(text, highlight=False, soft_wrap=True)

    def started(self, stage) -> None:
        self._ids[id(stage)] = self._bars.add_task(f"{stage.concept_id} · {stage.name}", total=stage.total, rate="")

    def advanced(self, stage) -> None:
        rate = f"{stage.rate:.2f} {stage.unit}s/s" if stage.rate else ""
        self._bars.update(self._ids[id(stage)], completed=stage.done, rate=rate)

    def finished(self, stage, ok: bool) -> None:
        task = self._ids.pop(id(stage), None)
        if task is not None:
            self._bars.remove_task(task)
        if ok:
            self._console.print(f"  {stage.describe()}", highlight=False)


def print_summary(console, summary) -> None:
    from rich.markup import escape
    from rich.table import Table

    from normguide.report import format_z

    table = Table(title=f"normguide run {summary.run_id}: {summary.status}")
    for col in ("concept", "status", "images", "generated", "methods", "mean seed z"):
        table.add_column(col, no_wrap=True)
    for cid, c in summary.concepts.items():
        status = f"[red]{c.status}[/red]" if c.status == "failed" else c.status
        table.add_row(cid, status, str(c.images), str(c.generated), ", ".join(c.methods), format_z(c.mean_seed_zscore))
    if summary.concepts:
        console.print(table)
    else:
        console.print(f"run {summary.run_id}: {summary.status}")
    for cid, c in summary.concepts.items():
        if c.error:
            console.print(f"[red]{escape(cid)}[/red]: {escape(c.error)}", soft_wrap=True, highlight=False)
    console.print(f"dataset: {summary.output_root}", soft_wrap=True)
    if summary.manifest_uri:
        console.print(f"manifest: {summary.manifest_uri}", soft_wrap=True)
    if summary.cost is not None:  # this invocation's generation: run.json cost, docs/outputs.md
        from normguide.reporting.cost import cost_lines

        for line in cost_lines(summary.cost.model_dump(mode="json")):
            console.print(line, soft_wrap=True, highlight=False)
    if summary.evaluation is not None:
        print_evaluation(console, summary.evaluation)
    if summary.evaluation_error:
        console.print(f"[red]evaluation failed:[/red] {escape(summary.evaluation_error)}", soft_wrap=True, highlight=False)
    for fmt, uri in summary.exports.items():
        console.print(f"export {fmt}: {uri}", soft_wrap=True, highlight=False)
    if summary.card_uri:
        console.print(f"dataset card: {summary.card_uri} (contact sheets under report/)", soft_wrap=True, highlight=False)
    if summary.report_error:
        console.print(f"[red]exports/report failed:[/red] {escape(summary.report_error)}", soft_wrap=True, highlight=False)
    if summary.is_demo and summary.model_note:
        console.print(f"[yellow]note: model {summary.model}[/yellow]", soft_wrap=True)


def print_evaluation(console, record) -> None:
    from rich.table import Table

    cols = sorted({c for v in record.per_method.values() for c in v})
    table = Table(title=f"evaluation ({record.judge}), mean over concepts")
    for col in ["method", *cols]:
        table.add_column(col, no_wrap=True)
    for method, values in record.per_method.items():
        table.add_row(method, *("" if values.get(c) is None else f"{values[c]:.3f}" for c in cols))
    console.print(table)
    if record.longtail_rare_accuracy:
        sets = record.longtail_rare_accuracy
        console.print("long-tail (linear probe on CLIP), rare-class accuracy: "
                      + ", ".join(f"{name} {v:.3f}" for name, v in sets.items()), soft_wrap=True, highlight=False)
    console.print(f"evaluation: {record.report_uri}", soft_wrap=True)


def print_existing(console, ctx, concepts) -> None:
    """What a run would do with what the output already holds: concepts done, still to make, or
    made again because their row in the table changed (read-only)."""
    from normguide.pipeline import steps

    try:
        if not ctx.storage.exists(layout.RUN_JSON):
            return
        states = steps.part_states(ctx, concepts)
    except (ValueError, OSError) as exc:
        console.print(f"(could not read the existing run: {exc})", highlight=False, soft_wrap=True)
        return
    done = sum(st == [] for st in states.values())
    missing = sum(st is None for st in states.values())
    changed = {cid: st for cid, st in states.items() if st}
    line = f"existing run: {done} concept(s) done, {missing} to generate"
    if changed:
        line += f", {len(changed)} changed since (made again): " + "; ".join(
            f"{c} ({', '.join(cols)})" for c, cols in changed.items())
    console.print(line, highlight=False, soft_wrap=True)
