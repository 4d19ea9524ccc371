"""The run's report as static HTML: ``report/index.html`` and one page per concept.

::

    report/index.html                  counts, the evaluation table, per concept its contact sheet
                                       and seed-norm plot, links to the card, the eval report, pages
    report/<concept_id>/index.html     every image of the concept with its manifest fields

Plain files with relative links only (no script, no stylesheet or font from elsewhere), so the
folder works opened from a local disk, copied elsewhere, or served by any static host (an S3
bucket's website endpoint, ``python -m http.server``). Every text that comes from the run (names,
prompts, ids, paths, values) is HTML-escaped: a concept's name may hold ``<script>``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from html import escape
from typing import Any
from urllib.parse import quote

import pandas as pd

from normguide.data import layout
from normguide.reporting.records import (
    CARD_KEY,
    EVAL_PLOT_KEY,
    EVAL_REPORT_KEY,
    ReportRecord,
    shown_note,
)
from normguide.reporting.tables import METRIC_MEANINGS

HTML_INDEX_KEY = layout.REPORT_HTML
#: Most images of one method shown on a concept's page (the rest are in the manifest).
MAX_IMAGES_PER_METHOD = 500

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0; } th, td { border: 1px solid #ccc; padding: .25em .6em; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
img.sheet { max-width: 100%; border: 1px solid #ddd; image-rendering: pixelated; }
.grid { display: flex; flex-wrap: wrap; gap: .8em; }
figure { margin: 0; width: 15em; border: 1px solid #ddd; padding: .4em; font-size: .78em; }
figure img { width: 128px; height: 128px; image-rendering: pixelated; display: block; margin: 0 auto .3em; }
figure dl { display: grid; grid-template-columns: auto 1fr; gap: 0 .5em; margin: 0; }
figure dt { color: #666; } figure dd { margin: 0; overflow-wrap: anywhere; }
.note { color: #555; }
"""


concept_page_key = layout.concept_page_key


def _href(path: str) -> str:
    """A relative link, each path segment percent-encoded (ids may hold dots, never slashes)."""
    return escape(quote(path, safe="/._-~"), quote=True)


def _text(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def _page(title: str, body: list[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_text(title)}</title>", f"<style>{_STYLE}</style>", "</head>", "<body>", *body, "</body>", "</html>", "",
    ])


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.3f}" if isinstance(value, float) else _text(value)


def _counts_table(record: ReportRecord) -> list[str]:
    methods = list(dict.fromkeys(m for c in record.concepts for m in c.images))
    out = ["<table>", "<tr><th>concept</th><th>name</th><th>references</th>"
           + "".join(f"<th>{_text(m)}</th>" for m in methods) + "<th>total</th></tr>"]
    for c in record.concepts:
        out.append(f'<tr><td><a href="{_href(f"{c.concept_id}/index.html")}"><code>{_text(c.concept_id)}</code></a></td>'
                   f"<td>{_text(c.name)}</td><td class=n>{c.references}</td>"
                   + "".join(f"<td class=n>{c.images.get(m, 0)}</td>" for m in methods)
                   + f"<td class=n>{c.total}</td></tr>")
    out.append("<tr><th>all</th><td></td><td class=n>" + str(sum(c.references for c in record.concepts)) + "</td>"
               + "".join(f"<td class=n>{sum(c.images.get(m, 0) for c in record.concepts)}</td>" for m in methods)
               + f"<td class=n>{record.images}</td></tr>")
    return out + ["</table>"]


def _evaluation_table(evaluation: Mapping[str, Mapping[str, float | None]]) -> list[str]:
    metrics = list(dict.fromkeys(k for v in evaluation.values() for k in v))
    out = ["<table>", "<tr><th>method</th>" + "".join(f"<th>{_text(m)}</th>" for m in metrics) + "</tr>"]
    for method, values in evaluation.items():
        out.append(f"<tr><td>{_text(method)}</td>" + "".join(f"<td class=n>{_number(values.get(m))}</td>" for m in metrics)
                   + "</tr>")
    out.append("</table>")
    meanings = [f"<li><b>{_text(m)}</b>: {_text(METRIC_MEANINGS[m])}</li>" for m in metrics if m in METRIC_MEANINGS]
    return out + (["<ul class=note>", *meanings, "</ul>"] if meanings else [])


def index_html(record: ReportRecord, *, warnings: list[str] | None = None, has_eval_plot: bool = False,
               has_eval_report: bool = False) -> str:
    """``report/index.html``: links relative to ``report/``."""
    body = [
        f"<h1>normguide run <code>{_text(record.run_id)}</code></h1>",
        f"<p>{record.images} synthetic images of {len(record.concepts)} concept(s); formats: "
        f"{_text(', '.join(record.formats))}. Dataset card: <a href=\"{_href('../' + CARD_KEY)}\">README.md</a>; "
        f"manifest: <a href=\"{_href('../manifest.parquet')}\">manifest.parquet</a>.</p>",
    ]
    if warnings:
        body += ["<h2>Warnings</h2>", "<ul>", *(f"<li>{_text(w)}</li>" for w in warnings), "</ul>"]
    body += ["<h2>Images per concept and method</h2>", *_counts_table(record)]
    if record.evaluation:
        body += [f"<h2>Evaluation{' (judge: ' + _text(record.judge) + ')' if record.judge else ''}</h2>",
                 "<p class=note>Means over concepts.</p>", *_evaluation_table(record.evaluation)]
        if has_eval_report:
            body.append(f"<p>Full report: <a href=\"{_href('../' + EVAL_REPORT_KEY)}\">eval/report.md</a></p>")
        if has_eval_plot:
            body.append(f"<p><img class=sheet src=\"{_href('../' + EVAL_PLOT_KEY)}\" alt=\"evaluation metrics per method\"></p>")
    body.append("<h2>Contact sheets and seed norms</h2>")
    if record.seed_norms_overview_uri:
        body += [f"<p class=note>{_text(shown_note(len(record.shown), len(record.concepts)))}</p>",
                 f"<p><img class=sheet src=\"{_href('all_seed_norms.png')}\" alt=\"seed norms of every concept\"></p>"]
    for c in record.shown:
        cid = c.concept_id
        body += [
            f"<h3><a href=\"{_href(f'{cid}/index.html')}\"><code>{_text(cid)}</code></a> ({_text(c.name)})</h3>",
            f"<p class=note>prompt: {_text(c.prompt)}; every image with its manifest fields: "
            f"<a href=\"{_href(f'{cid}/index.html')}\">{_text(cid)}/index.html</a></p>",
            f"<p><img class=sheet src=\"{_href(f'{cid}/contact_sheet.png')}\" alt=\"contact sheet of {_text(cid)}\"></p>",
            f"<p><img class=sheet src=\"{_href(f'{cid}/seed_norms.png')}\" alt=\"seed norms of {_text(cid)}\"></p>",
        ]
    if others := [c for c in record.concepts if c.seed_norms_uri is None]:
        body += [f"<h3>The other {len(others)} concept(s)</h3>", "<table>",
                 "<tr><th>concept</th><th>name</th><th>images</th><th>contact sheet</th></tr>"]
        body += [f"<tr><td><a href=\"{_href(f'{c.concept_id}/index.html')}\"><code>{_text(c.concept_id)}</code></a></td>"
                 f"<td>{_text(c.name)}</td><td>{c.total}</td>"
                 f"<td><a href=\"{_href(f'{c.concept_id}/contact_sheet.png')}\">contact sheet</a></td></tr>"
                 for c in others]
        body.append("</table>")
    return _page(f"normguide run {record.run_id}", body)


#: Manifest columns shown under each image, in this order (then any others but the repeated ones).
_FIELDS = ("image_id", "method", "kind", "pair", "t", "source_refs", "seed", "seed_norm", "seed_zscore",
           "seed_log_prob", "reconstruction_error", "sha256", "width", "height", "file_name")
_SAME_FOR_ALL = ("run_id", "concept_id", "name", "prompt", "model", "model_revision", "scheduler",
                 "num_inference_steps", "guidance_scale", "inversion_steps", "inversion_guidance",
                 "normguide_version", "synthetic", "created_at")


def _field(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    if hasattr(value, "tolist"):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return ", ".join(_field(v) for v in value)
    return str(value)


def concept_html(concept_id: str, rows: pd.DataFrame, *, limit: int = MAX_IMAGES_PER_METHOD) -> str:
    """``report/<concept_id>/index.html``: per method every image (up to ``limit``) with its
    manifest fields; links relative to ``report/<concept_id>/``."""
    first = rows.iloc[0]
    body = [
        "<p><a href=\"../index.html\">&larr; the run's report</a></p>",
        f"<h1><code>{_text(concept_id)}</code> ({_text(first['name'])})</h1>",
        "<dl>" + "".join(f"<dt>{_text(c)}</dt><dd>{_text(_field(first[c]))}</dd>"
                         for c in _SAME_FOR_ALL if c in rows.columns and c not in ("concept_id",)) + "</dl>",
        f"<p><img class=sheet src=\"contact_sheet.png\" alt=\"contact sheet of {_text(concept_id)}\"></p>",
    ]
    shown = [c for c in _FIELDS if c in rows.columns]
    shown += [c for c in rows.columns if c not in shown and c not in _SAME_FOR_ALL]
    for method, group in rows.groupby("method", sort=False):
        body.append(f"<h2>{_text(method)}: {len(group)} image(s)"
                    + (f", the first {limit} shown" if len(group) > limit else "") + "</h2>")
        body.append('<div class="grid">')
        for row in group.head(limit).itertuples(index=False):
            values = row._asdict()
            src = "../../" + str(values.get("file_name") or f"images/{concept_id}/{values['image_id']}.png")
            fields = "".join(f"<dt>{_text(c)}</dt><dd>{_text(_field(values[c]))}</dd>" for c in shown
                             if _field(values[c]) != "")
            body.append(f"<figure id=\"{_text(values['image_id'])}\"><img src=\"{_href(src)}\" "
                        f"alt=\"{_text(values['image_id'])}\"><dl>{fields}</dl></figure>")
        body.append("</div>")
    return _page(f"{concept_id} ({first['name']})", body)


__all__ = ["HTML_INDEX_KEY", "MAX_IMAGES_PER_METHOD", "concept_html", "concept_page_key", "index_html"]
