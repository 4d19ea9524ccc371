"""The report step: pictures, ``report/index.md`` and the dataset card of a finished run.

Reads the run's files (run.json, manifest.parquet, seeds files, images, the references they name,
eval/ when present), loads no model, and writes (see :mod:`normguide.reporting.records`)::

    report/<concept_id>/contact_sheet.png, report/<concept_id>/seed_norms.png,
    report/index.md, README.md

A run of many concepts: every concept gets its contact sheet and its page, but only
``MAX_PLOTTED_CONCEPTS`` get a seed-norm plot of their own and are drawn inline in the summaries
(a plot costs ~0.13 s of matplotlib: 20 minutes at 10,000 concepts). Those are the concepts
whose planned seeds sit farthest from the typical band (largest |z|; table order among equals),
the ones worth a look; every concept's seeds are then in one overview plot,
``report/all_seed_norms.png``, and the summaries list the others with links.

Same run files, same bytes: rerunning the step rewrites identical files.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa
from PIL import Image, ImageDraw

from normguide.data import layout, run_record
from normguide.data import manifest as mf
from normguide.data.images import ReferenceImageError, decode_reference
from normguide.data.seeds import SeedsFile, seeds_key
from normguide.data.storage import Storage, StorageError, read_bytes
from normguide.data.text import printable
from normguide.reporting import card as card_mod
from normguide.reporting.norms import PlannedZ, seed_norm_plot
from normguide.reporting.records import (
    CARD_KEY,
    EVAL_METRICS_KEY,
    EVAL_PLOT_KEY,
    EVAL_REPORT_KEY,
    INDEX_KEY,
    NORMS_OVERVIEW_KEY,
    ConceptReport,
    ReportRecord,
    norms_key,
    sheet_key,
    shown_note,
)
from normguide.reporting.sheets import Band, Tile, render_sheet
from normguide.reporting.tables import counts_markdown, evaluation_markdown, headline_evaluation

if TYPE_CHECKING:
    from normguide.config import StorageConfig
    from normguide.pipeline import EvaluationRecord

#: Most images of one method shown on a contact sheet (the first ones in plan order, which
#: cover every path at its middle first); the band's label says how many there are in all.
MAX_PER_METHOD = 24
#: Most concepts of a run with a seed-norm plot of their own, drawn inline in the summaries.
MAX_PLOTTED_CONCEPTS = 50
_KIND_ORDER = {"centroid": 0, "inversion": 1, "interpolant": 2, "random": 3}


@dataclass(frozen=True)
class _Run:
    """Where a report reads from: the run root, and how references outside it are read."""

    storage: Storage
    storage_config: StorageConfig | None

    def read_input(self, uri: str) -> bytes:
        return read_bytes(uri, storage_config=self.storage_config)


def write_report(storage: Storage, *, storage_config: StorageConfig | None = None,
                 evaluation: EvaluationRecord | None = None, max_per_method: int = MAX_PER_METHOD,
                 max_plotted: int = MAX_PLOTTED_CONCEPTS) -> ReportRecord:
    """Write the run's contact sheets, seed-norm plots, ``report/index.md`` and ``README.md``.

    Args:
        storage: the run's root (a finalized run; its run.json names the run and the model).
        storage_config: the run's storage settings, to read reference images that live outside
            the run root (s3:// with an endpoint or credentials); default: the environment's.
        evaluation: the evaluation step's record, for the judge's name; the numbers are read
            from ``eval/metrics.parquet`` whenever it exists.
        max_per_method: most images of one method on a contact sheet.
        max_plotted: most concepts with a seed-norm plot of their own (see the module docstring).

    Returns:
        The URIs written and the counts shown.

    Raises:
        ValueError: the run has no ``manifest.parquet`` (not finalized), or a concept of the
            manifest has no seeds file.
    """
    ctx = _Run(storage, storage_config)
    # 1. Check inputs: a finalized run
    if max_per_method < 1:
        raise ValueError(f"max_per_method must be ≥ 1, got {max_per_method}")
    if max_plotted < 1:
        raise ValueError(f"max_plotted must be ≥ 1, got {max_plotted}")
    if not storage.exists(layout.MANIFEST):
        raise ValueError(f"run at {storage.root} has no manifest.parquet: it is missing or not complete "
                         "(finish it with `normguide run` first)")
    run = json.loads(storage.read_bytes(run_record.RUN_JSON)) if storage.exists(run_record.RUN_JSON) else {}
    manifest_table = mf.parquet_to_table(storage.read_bytes(layout.MANIFEST))
    manifest = manifest_table.to_pandas()
    model = run.get("model") or {}
    run_id = str(run.get("run_id") or storage.root.rstrip("/").rsplit("/", 1)[-1])  # the recorded id
    subtitle_model = f"model {model.get('id', manifest['model'].iloc[0] if len(manifest) else '?')}"

    # 2. Per concept: contact sheet, and the seed-norm plot of the concepts worth a look
    plotted = concepts_to_plot(manifest, max_plotted)
    concepts, overview = [], _Overview()
    for cid, rows in manifest.groupby("concept_id", sort=False):
        cid = str(cid)
        seeds = _read_seeds(ctx, cid)
        # escaped: text of a run made before names were checked must not break a line or the card
        name, prompt = printable(rows["name"].iloc[0]), printable(rows["prompt"].iloc[0])
        title = f"{cid}  ·  {name}"
        subtitle = f'prompt "{prompt}"  ·  {subtitle_model}  ·  run {run_id}'
        try:
            sheet = contact_sheet(ctx, seeds, rows, title=title, subtitle=subtitle, max_per_method=max_per_method)
            inverted_z, planned, dim = seed_zscores(seeds)
            norms = (seed_norm_plot(f"{cid} ({name}): seed norms", inverted_z, planned, dim=dim)
                     if cid in plotted else None)
        except StorageError:
            raise  # names its endpoint and key already
        except Exception as exc:  # every failure of a concept's pictures names the concept
            raise ValueError(f"report of concept {cid!r} ({name!r}) failed: "
                             f"{type(exc).__name__}: {printable(exc)}") from exc
        overview.add(inverted_z, planned, dim)
        storage.write_bytes(sheet_key(cid), sheet)
        if norms is not None:
            storage.write_bytes(norms_key(cid), norms)
        concepts.append(ConceptReport(
            concept_id=cid, name=name, prompt=prompt, references=len(seeds.meta["reference_uris"]),
            images={str(m): int(n) for m, n in rows.groupby("method", sort=False).size().items()},
            contact_sheet_uri=storage.uri(sheet_key(cid)),
            seed_norms_uri=storage.uri(norms_key(cid)) if norms is not None else None,
        ))
    overview_uri = None
    if len(plotted) < len(concepts):  # every concept's seeds in one plot
        storage.write_bytes(NORMS_OVERVIEW_KEY, overview.plot(f"all {len(concepts)} concepts: seed norms"))
        overview_uri = storage.uri(NORMS_OVERVIEW_KEY)

    # 3. Evaluation numbers and export formats, when present
    has_eval = storage.exists(EVAL_METRICS_KEY)
    exports = find_exports(ctx, manifest_table)
    record = ReportRecord(
        run_id=run_id, output_root=storage.root, card_uri=storage.uri(CARD_KEY), index_uri=storage.uri(INDEX_KEY),
        concepts=concepts, formats=exports.formats,
        evaluation=headline_evaluation(storage.read_bytes(EVAL_METRICS_KEY)) if has_eval else {},
        evaluation_report_uri=storage.uri(EVAL_REPORT_KEY) if storage.exists(EVAL_REPORT_KEY) else None,
        evaluation_plot_uri=storage.uri(EVAL_PLOT_KEY) if storage.exists(EVAL_PLOT_KEY) else None,
        judge=evaluation.judge if evaluation is not None else None, seed_norms_overview_uri=overview_uri,
    )

    # 4. The summary and the card
    storage.write_bytes(INDEX_KEY, index_markdown(record, absolute=False).encode())
    write_html(ctx, record, manifest, warnings=list(run.get("warnings") or []))
    storage.write_bytes(CARD_KEY, card_mod.dataset_card(
        run, record, schema=manifest_table.schema, export_yaml=exports.card_yaml, snippets=exports.snippets,
        manifest_bytes=storage.sizes([layout.MANIFEST]).get(layout.MANIFEST, 0)).encode())
    return record


def write_html(ctx: _Run, record: ReportRecord, manifest: pd.DataFrame, *, warnings: list[str]) -> None:
    """``report/index.html`` and ``report/<concept_id>/index.html`` (:mod:`normguide.reporting.html`)."""
    from normguide.reporting import html

    storage = ctx.storage
    for cid, rows in manifest.groupby("concept_id", sort=False):
        storage.write_bytes(html.concept_page_key(str(cid)), html.concept_html(str(cid), rows).encode())
    storage.write_bytes(html.HTML_INDEX_KEY, html.index_html(
        record, warnings=warnings, has_eval_plot=record.evaluation_plot_uri is not None,
        has_eval_report=record.evaluation_report_uri is not None).encode())


def _read_seeds(ctx: _Run, concept_id: str) -> SeedsFile:
    key = seeds_key(concept_id)
    if not ctx.storage.exists(key):
        raise ValueError(f"concept {concept_id!r}: no seeds file {ctx.storage.uri(key)}, so its references are unknown")
    return SeedsFile.from_bytes(ctx.storage.read_bytes(key), where=ctx.storage.uri(key))


# -- contact sheet ---------------------------------------------------------------------------------
def _placeholder(text: str, size: int = 64) -> Image.Image:
    """A grey tile saying why an image is missing (a moved reference must not stop the report)."""
    im = Image.new("RGB", (size, size), (215, 215, 215))
    ImageDraw.Draw(im).text((4, size // 2 - 6), text, fill=(90, 90, 90))
    return im


def _reference_tiles(ctx: _Run, seeds: SeedsFile, limit: int) -> list[Tile]:
    tiles = []
    for i, uri in enumerate(seeds.meta["reference_uris"][:limit]):
        try:
            image = decode_reference(ctx.read_input(uri), uri=uri, concept_id=seeds.concept_id)
        except (FileNotFoundError, ReferenceImageError, ValueError):
            image = _placeholder("missing")
        tiles.append(Tile(image, (f"reference {i}", uri.rsplit("/", 1)[-1])))
    return tiles


def caption(row: Any, references: list[str]) -> tuple[str, ...]:
    """What a generated tile is: first line the kind (for an interpolant its path, "i to j" between
    references i and j (numbered from 0) or "c to j" from the centroid, and t), then its image id
    and seed z-score."""
    kind, pair, t = row.kind, row.pair, row.t
    if kind == "interpolant" and pair is not None and len(pair) == 2 and t is not None:
        a = "c" if int(pair[0]) == -1 else str(int(pair[0]))
        what = f"{a} to {int(pair[1])}, t={float(t):.2f}"
    elif kind == "inversion" and row.source_refs is not None and len(row.source_refs):
        src = row.source_refs[0]
        what = f"inversion of {references.index(src)}" if src in references else "inversion"
    elif kind == "random" and row.seed is not None and not pd.isna(row.seed):
        what = f"random  seed …{int(row.seed) % 100000:05d}"
    else:
        what = str(kind)
    z = "" if row.seed_zscore is None or pd.isna(row.seed_zscore) else f"z={row.seed_zscore:+.2f}"
    return what, row.image_id, z


def _display_order(rows: pd.DataFrame, limit: int) -> pd.DataFrame:
    """The first ``limit`` rows in plan order, shown sorted by kind, path and t."""
    shown = rows.head(limit).copy()
    shown["_kind"] = shown["kind"].map(_KIND_ORDER).fillna(9)
    shown["_pair"] = [tuple(p) if p is not None else () for p in shown["pair"]]
    shown["_t"] = shown["t"].fillna(-1.0)
    return shown.sort_values(["_kind", "_pair", "_t", "image_id"], kind="stable")


def contact_sheet(ctx: _Run, seeds: SeedsFile, rows: pd.DataFrame, *, title: str, subtitle: str,
                  max_per_method: int = MAX_PER_METHOD) -> bytes:
    """The PNG of one concept: its references, then per method its images (manifest ``rows``)."""
    from normguide.data.plan import SEED_METHODS

    storage = ctx.storage
    refs = _reference_tiles(ctx, seeds, max_per_method)
    n_refs = len(seeds.meta["reference_uris"])
    bands = [Band("REFERENCES", ("real images", f"{n_refs} image(s)" + (f", {len(refs)} shown" if len(refs) < n_refs else ""),
                                 "inverted to seeds"), tuple(refs), reference=True)]
    table_refs = (seeds.meta.get("concept") or {}).get("reference_uris") or seeds.meta["reference_uris"]  # as source_refs
    for method, group in rows.groupby("method", sort=False):
        shown = _display_order(group, max_per_method)
        tiles = []
        for row in shown.itertuples():
            with Image.open(io.BytesIO(storage.read_bytes(mf.image_key(row.concept_id, row.image_id)))) as im:
                tiles.append(Tile(im.convert("RGB"), caption(row, table_refs)))
        count = f"{len(group)} generated" + (f", {len(shown)} shown" if len(shown) < len(group) else "")
        desc = SEED_METHODS[method].description if method in SEED_METHODS else ""
        bands.append(Band(str(method), (count, desc), tuple(tiles)))
    return render_sheet(title, subtitle, bands)


# -- seed norms ------------------------------------------------------------------------------------
def concepts_to_plot(manifest: pd.DataFrame, limit: int) -> set[str]:
    """The ``limit`` concepts whose planned seeds sit farthest from the typical band (largest
    |seed_zscore| of the manifest; table order among equals): every concept when there are no more."""
    ids = list(dict.fromkeys(manifest["concept_id"].astype(str)))
    if len(ids) <= limit:
        return set(ids)
    worst = manifest["seed_zscore"].abs().groupby(manifest["concept_id"].astype(str), sort=False).max()
    order = sorted(range(len(ids)), key=lambda i: (-float(worst.get(ids[i], 0.0) if pd.notna(worst.get(ids[i])) else 0.0), i))
    return {ids[i] for i in order[:limit]}


def seed_zscores(seeds: SeedsFile) -> tuple[list[float], list[PlannedZ], int]:
    """z-scores of a concept's inverted and planned seeds under the chi prior of N(0, I), and the
    seed dimension d."""
    import torch

    from normguide.geometry import ChiPrior

    inverted = seeds.inverted.reshape(seeds.num_seeds, -1).to(torch.float64)
    prior = ChiPrior(inverted.shape[1])
    planned = []
    if seeds.has_plan:
        z = prior.zscore(seeds.planned.reshape(seeds.planned.shape[0], -1).to(torch.float64)).tolist()
        planned = [PlannedZ(r.method, r.kind, v) for r, v in zip(seeds.plan_rows, z)]
    return prior.zscore(inverted).tolist(), planned, prior.d


class _Overview:
    """Every concept's seed z-scores, for one plot of the whole run."""

    def __init__(self) -> None:
        self.inverted: list[float] = []
        self.planned: list[PlannedZ] = []
        self.dims: set[int] = set()

    def add(self, inverted_z: list[float], planned: list[PlannedZ], dim: int) -> None:
        self.inverted += inverted_z
        self.planned += planned
        self.dims.add(dim)

    def plot(self, title: str) -> bytes:
        return seed_norm_plot(title, self.inverted, self.planned, dim=max(self.dims, default=0))


# -- exports ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Exports:
    """The export formats under the run, what the card needs of them."""

    formats: list[str]
    card_yaml: dict | None  # configs + dataset_info of the hf export
    snippets: dict[str, str]  # format -> a line of Python that loads it


def find_exports(ctx: _Run, manifest: pa.Table) -> Exports:
    """Which exports exist (``hf/<method>/train-*.parquet``, ``webdataset/shard-*.tar``), the
    ``hf`` export's card YAML and a loading line per format, from ``normguide.export`` when it
    is installed (its ``hf_card_yaml`` needs the ``datasets`` package), else derived here."""
    storage = ctx.storage
    hf_files = [k for k in storage.list(layout.HF_DIR) if k.endswith(".parquet")]
    shards = [k for k in storage.list(layout.WEBDATASET_DIR) if k.endswith(".tar")]
    formats = ["manifest"] + (["hf"] if hf_files else []) + (["webdataset"] if shards else [])
    try:
        from normguide import export
    except ImportError:
        export = None
    endpoint = ctx.storage_config.endpoint_url if ctx.storage_config is not None else None
    # the card's loading lines work from where the dataset is: relative to the run's folder for a
    # local run (a copied or moved folder still loads), the s3:// URI for a run on S3
    s3 = storage.root.startswith("s3://")
    where = storage.uri if s3 else (lambda key: f"./{key}")
    snippets, yaml_fields = {}, None
    if hf_files:
        try:
            yaml_fields = export.hf_card_yaml(manifest) if export is not None else None
        except ImportError:  # the datasets package is not installed
            yaml_fields = None
        yaml_fields = yaml_fields or card_mod.derived_hf_yaml(hf_files)
        card_mod.set_split_bytes(yaml_fields, storage.sizes(hf_files))
        if export is not None:
            snippets["hf"] = export.load_snippet("hf", where(layout.HF_DIR), endpoint_url=endpoint)
    if shards:
        snippets["webdataset"] = (
            export.load_snippet("webdataset", where(layout.WEBDATASET_DIR), endpoint_url=endpoint, num_shards=len(shards))
            if export is not None else
            f'webdataset.WebDataset("{where(layout.WEBDATASET_DIR)}/shard-{{00000..{len(shards) - 1:05d}}}.tar")'
        )
    return Exports(formats=formats, card_yaml=yaml_fields, snippets=snippets)


# -- index -----------------------------------------------------------------------------------------
def index_markdown(record: ReportRecord, *, absolute: bool) -> str:
    """The run's summary in markdown: counts, evaluation, and per concept its sheet and plot.

    ``absolute=False`` links relative to ``report/`` (the file ``report/index.md``), pictures
    drawn inline; ``absolute=True`` links full URIs (a Prefect artifact, which has no folder),
    pictures inline only at http(s) URLs, else as links."""

    def link(uri: str) -> str:
        if absolute:
            return uri
        root = record.output_root.rstrip("/") + "/"
        if not uri.startswith(root):
            return uri
        key = uri[len(root):]
        return key[len(layout.REPORT_DIR) + 1:] if key.startswith(f"{layout.REPORT_DIR}/") else "../" + key

    lines = [
        f"# normguide run `{record.run_id}`",
        "",
        f"- output: `{record.output_root}`",
        f"- {record.images} images, {len(record.concepts)} concept(s); dataset card: [README.md]({link(record.card_uri)})",
        f"- formats: {', '.join(record.formats)}",
        f"- the report to look at in a browser: [report/index.html]({link(record.output_root.rstrip('/') + '/report/index.html')})",
        "",
        "## Images per concept and method",
        "",
        *counts_markdown({c.concept_id: (c.name, c.images) for c in record.concepts},
                         references={c.concept_id: c.references for c in record.concepts}),
        "",
    ]
    if record.evaluation:
        lines += ["## Evaluation" + (f" (judge: {record.judge})" if record.judge else ""), "",
                  *evaluation_markdown(record.evaluation), ""]
        if record.evaluation_report_uri:
            lines += [f"Full report: [eval/report.md]({link(record.evaluation_report_uri)})", ""]
    def picture(what: str, uri: str, name: str) -> list[str]:
        target = link(uri)
        if absolute and not target.startswith(("http://", "https://")):
            return [f"- {what}: [`{target}`]({target})"]  # a viewer draws no image from a path or s3://
        return [f"![{what} of {name}]({target})", ""]

    lines += ["## Contact sheets and seed norms", ""]
    shown = record.shown
    if record.seed_norms_overview_uri:
        lines += [shown_note(len(shown), len(record.concepts)), "",
                  *picture("seed norms", record.seed_norms_overview_uri, "every concept")]
        if lines[-1]:
            lines.append("")
    for c in shown:
        lines += [f"### `{c.concept_id}` ({c.name})", ""]
        for what, uri in (("contact sheet", c.contact_sheet_uri), ("seed norms", c.seed_norms_uri)):
            lines += picture(what, uri, c.concept_id)
        if lines[-1]:
            lines.append("")
    if others := [c for c in record.concepts if c.seed_norms_uri is None]:
        lines += [f"### The other {len(others)} concept(s)", "", "| concept | name | images | contact sheet |",
                  "|---|---|---:|---|"]
        lines += [f"| `{c.concept_id}` | {c.name} | {c.total} | [contact sheet]({link(c.contact_sheet_uri)}) |"
                  for c in others]
        lines.append("")
    return "\n".join(lines)

