"""report/index.html: a static report (contact sheets, seed-norm plots, the metrics table, a page
per concept with every image and its manifest fields), relative links only, all text escaped,
rendered in headless Chromium (Debian's `chromium`) with every image loaded; the screenshot is
kept as a test artifact (NORMGUIDE_TEST_ARTIFACTS, default the test's tmp_path)."""

from __future__ import annotations

import functools
import http.server
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest

from normguide.reporting import write_report
from normguide.reporting.html import HTML_INDEX_KEY, concept_html, concept_page_key, index_html

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic"]

#: Served next to the report: opens a page in a same-origin frame and writes, once it has loaded,
#: every <img>'s URL and natural width into the DOM that --dump-dom prints.
CHECK_PAGE = """<!DOCTYPE html><html><body><pre id="result">pending</pre>
<iframe id="f" src="%s" width="1200" height="900"></iframe>
<script>
// polled, not event-driven: a load event that fired before the listener, or an image whose
// decode() never settles, cannot leave the check pending; timers run under --virtual-time-budget
const timer = setInterval(() => {
  const doc = document.getElementById("f").contentDocument;
  if (!doc || doc.readyState !== "complete" || doc.location.href === "about:blank") return;
  const imgs = Array.from(doc.images);
  if (!imgs.every(i => i.complete)) return;  // a failed image is complete too, with naturalWidth 0
  clearInterval(timer);
  document.getElementById("result").textContent = "RESULT" + JSON.stringify(
    {title: doc.title, images: imgs.map(i => [i.getAttribute("src"), i.naturalWidth])}) + "END";
}, 50);
</script></body></html>"""


@pytest.fixture(scope="module")
def report(finished_run, tmp_path_factory):
    root = finished_run.copy(tmp_path_factory.mktemp("html") / "run")
    write_report(finished_run.context(root).storage)
    return finished_run, root


def _links(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="([^"]+)"', html)


def test_pages_link_only_relative_paths_that_exist(report):
    run, root = report
    manifest = pd.read_parquet(root / "manifest.parquet")
    pages = [root / HTML_INDEX_KEY] + [root / concept_page_key(c) for c in manifest.concept_id.unique()]
    for page in pages:
        html = page.read_text()
        assert str(root) not in html and "://" not in html  # relative only: a local disk or any static host
        for link in _links(html):
            assert (page.parent / link).resolve().is_file(), (page, link)
    index = (root / HTML_INDEX_KEY).read_text()
    assert "contact_sheet.png" in index and "seed_norms.png" in index and "recognisability" in index
    two = (root / concept_page_key("digit-two")).read_text()
    rows = manifest[manifest.concept_id == "digit-two"]
    assert two.count("<figure") == len(rows)
    for row in rows.itertuples():  # each image with its manifest fields
        assert f'id="{row.image_id}"' in two and row.sha256 in two
    card = (root / "README.md").read_text()
    assert "(report/index.html)" in card
    assert "[report/index.html](index.html)" in (root / "report/index.md").read_text()


def test_every_text_is_escaped(report):
    _, root = report
    manifest = pd.read_parquet(root / "manifest.parquet")
    rows = manifest[manifest.concept_id == "digit-two"].copy()
    evil = '<script>alert("x")</script>&'
    rows["name"] = evil
    rows["prompt"] = evil
    page = concept_html("digit-two", rows)
    assert "<script>" not in page and "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in page
    from normguide.reporting import ConceptReport, ReportRecord

    record = ReportRecord(run_id="r<1>", output_root=str(root), card_uri="c", index_uri="i", concepts=[ConceptReport(
        concept_id="a", name=evil, prompt=evil, references=1, images={"nao<b>": 2}, contact_sheet_uri="x",
        seed_norms_uri="y")], evaluation={"nao<b>": {"coverage": 0.5}})
    index = index_html(record, warnings=[evil])
    assert "<script>" not in index and "nao<b>" not in index and "nao&lt;b&gt;" in index and "r&lt;1&gt;" in index


def _serve(root: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _chromium(*args: str, profile: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True, text=True,
                          timeout=180)


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (Debian: apt-get install chromium); "
                    "the HTML report is not rendered in a browser")
def test_chromium_renders_the_report_with_every_image_loaded(report, tmp_path):
    _, root = report
    site = shutil.copytree(root, tmp_path / "site")  # as uploaded to a static host
    pages = [HTML_INDEX_KEY, concept_page_key("digit-two")]
    for i, page in enumerate(pages):
        (site / f"check-{i}.html").write_text(CHECK_PAGE % page)
    server = _serve(site)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        for i, page in enumerate(pages):
            for attempt, budget in enumerate((20000, 60000, 120000)):  # a loaded machine can run out of a budget
                res = _chromium(f"--virtual-time-budget={budget}", "--dump-dom", f"{base}/check-{i}.html",
                                profile=tmp_path / f"profile-{i}-{attempt}")
                found = re.search(r"RESULT(.*)END", res.stdout)
                if found:
                    break
            assert found, (page, res.stdout[-2000:], res.stderr[-2000:])
            seen = json.loads(found.group(1).replace("&quot;", '"').replace("&amp;", "&"))
            assert seen["images"], page
            assert [src for src, width in seen["images"] if width <= 0] == [], page  # every image loaded
    finally:
        server.shutdown()
    # the screenshot, from the local disk (file://), kept as the test's artifact
    out = Path(os.environ.get("NORMGUIDE_TEST_ARTIFACTS", tmp_path)) / "report-index.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    res = _chromium("--window-size=1280,2400", f"--screenshot={out}", (root / HTML_INDEX_KEY).as_uri(),
                    profile=tmp_path / "profile-shot")
    assert out.is_file() and out.stat().st_size > 10_000, res.stderr[-2000:]
    print(f"screenshot of the HTML report: {out}")
