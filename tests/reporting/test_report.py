"""write_report on a real finished run: the files, the contact sheet's grid and tiles, the
seed-norm plot, the card's header and counts, determinism, S3, exports in the card."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from normguide.data.storage import Storage
from normguide.reporting import CARD_KEY, INDEX_KEY, ReportRecord, norms_key, sheet_key, write_report
from normguide.reporting.sheets import fit_tile, sheet_layout
from tests.reporting.conftest import METHODS, NUM_IMAGES, REFERENCES

PNG = b"\x89PNG\r\n\x1a\n"


def card_header(text: str) -> tuple[dict, str]:
    """(YAML header, prose) of a dataset card."""
    assert text.startswith("---\n"), text[:80]
    head, sep, body = text[4:].partition("\n---\n")
    assert sep, "the YAML header is not closed by a --- line"
    return yaml.safe_load(head), body


@pytest.fixture(scope="module")
def report(finished_run, tmp_path_factory):
    """(record, run root) of a report written on a copy of the finished run."""
    root = finished_run.copy(tmp_path_factory.mktemp("report") / "run")
    return write_report(finished_run.context(root).storage), root


def _manifest(root) -> pd.DataFrame:
    return pd.read_parquet(root / "manifest.parquet")


def test_report_writes_a_sheet_and_a_plot_per_concept_an_index_and_a_card(report):
    record, root = report
    concepts = list(dict.fromkeys(_manifest(root).concept_id))
    assert [c.concept_id for c in record.concepts] == concepts == ["digit-two", "digit-five"]
    for c in concepts:
        for key in (sheet_key(c), norms_key(c)):
            data = (root / key).read_bytes()
            assert data[:8] == PNG, key
            Image.open(io.BytesIO(data)).verify()
    assert (root / CARD_KEY).is_file() and (root / INDEX_KEY).is_file()
    assert sorted(record.uris) == sorted(str(root / k) for k in
                                         [CARD_KEY, INDEX_KEY, *(f(c) for c in concepts for f in (sheet_key, norms_key))])
    assert ReportRecord.model_validate_json(record.model_dump_json()) == record  # a small, JSON-able record


def test_contact_sheet_grid_has_a_tile_per_reference_and_image(report, finished_run):
    record, root = report
    manifest = _manifest(root)
    for c in record.concepts:
        rows = manifest[manifest.concept_id == c.concept_id]
        per_method = [int((rows.method == m).sum()) for m in METHODS]
        assert per_method == [NUM_IMAGES] * len(METHODS) and c.references == REFERENCES
        layout = sheet_layout([REFERENCES, *per_method])
        assert layout.num_tiles == REFERENCES + len(rows)
        with Image.open(root / sheet_key(c.concept_id)) as sheet:
            assert sheet.size == layout.size
            sheet = sheet.convert("RGB")
            # the first band holds the references, in order, above the rule
            name = c.name
            for i, box in enumerate(layout.tile_boxes[0]):
                with Image.open(finished_run.root.parent.parent / f"{name}-{i}.png") as ref:
                    assert sheet.crop(box).tobytes() == fit_tile(ref).tobytes(), (c.concept_id, i)
            assert layout.rule_y is not None and layout.rule_y > max(b[3] for b in layout.tile_boxes[0])
            # the nao band starts with its centroid image
            with Image.open(root / "images" / c.concept_id / "nao-centroid-00000.png") as centroid:
                assert sheet.crop(layout.tile_boxes[1][0]).tobytes() == fit_tile(centroid).tobytes()
            # and the random band shows the random images, not the centroid
            assert sheet.crop(layout.tile_boxes[2][0]).tobytes() != fit_tile(centroid).tobytes()


def test_contact_sheet_shows_at_most_max_per_method(finished_run, tmp_path):
    root = finished_run.copy(tmp_path / "run")
    write_report(finished_run.context(root).storage, max_per_method=1)
    with Image.open(root / sheet_key("digit-two")) as sheet:
        assert sheet.size == sheet_layout([1, 1, 1]).size


def test_card_header_is_a_hugging_face_dataset_card_with_the_manifest_counts(report):
    _, root = report
    header, body = card_header((root / CARD_KEY).read_text())
    for key in ("license", "task_categories", "tags", "size_categories", "pretty_name", "configs", "dataset_info"):
        assert key in header, key
    assert "synthetic" in header["tags"] and header["size_categories"] == ["n<1K"]
    manifest = _manifest(root)
    # num_bytes: datasets ignores a split without one (a "malformed" warning on every load)
    assert header["dataset_info"]["splits"] == [{"name": "train", "num_bytes": (root / "manifest.parquet").stat().st_size,
                                                 "num_examples": len(manifest)}]
    assert [f["name"] for f in header["dataset_info"]["features"]] == list(manifest.columns)
    assert header["configs"][0]["data_files"][0]["path"] == "manifest.parquet"
    # the counts table: one row per concept, a column per method, matching the manifest
    counts = manifest.groupby(["concept_id", "method"]).size()
    table = [line for line in body.splitlines() if line.startswith("| `digit-")]
    assert len(table) == 2
    for line in table:
        cells = [x.strip() for x in line.strip("|").split("|")]
        cid = cells[0].strip("`")
        assert cells[1:] == [cid.split("-")[1], str(REFERENCES), *(str(counts[cid, m]) for m in METHODS),
                             str(int(counts[cid].sum()))]


def test_card_prose_says_synthetic_model_methods_evaluation_and_links_existing_sheets(report):
    record, root = report
    run = json.loads((root / "run.json").read_text())
    _, body = card_header((root / CARD_KEY).read_text())
    assert "**Synthetic data.**" in body and f"from {REFERENCES} real reference images per concept" in body
    assert f"`{run['model']['id']}`" in body and f"`{run['model']['revision']}`" in body
    assert "- `nao`: NAO centroid" in body and "- `random`: " in body
    evaluation = body.split("## Evaluation", 1)[1].split("\n## ", 1)[0]
    assert "| `nao` |" in evaluation and "recognisability" in evaluation and "eval/report.md" in evaluation
    for c in record.concepts:
        for key in (sheet_key(c.concept_id), norms_key(c.concept_id)):
            assert f"]({key})" in body and (root / key).is_file()
    assert 'pd.read_parquet(f"{root}/manifest.parquet")' in body
    assert "2306.08687" in body and "## Licence" in body
    index = (root / INDEX_KEY).read_text()
    assert "](digit-two/contact_sheet.png)" in index and "](../README.md)" in index


def test_report_is_byte_identical_on_a_second_call(finished_run, tmp_path):
    root = finished_run.copy(tmp_path / "run")
    ctx = finished_run.context(root)
    first = write_report(ctx.storage)
    before = {k: (root / k).read_bytes() for k in (CARD_KEY, INDEX_KEY, "report/digit-two/contact_sheet.png",
                                                   "report/digit-two/seed_norms.png", "report/digit-five/seed_norms.png")}
    assert write_report(ctx.storage) == first
    assert {k: (root / k).read_bytes() for k in before} == before


def test_a_run_of_more_concepts_than_plots_plots_the_farthest_and_lists_the_others(finished_run, tmp_path):
    """Above ``max_plotted`` concepts: a seed-norm plot only for the concepts whose planned seeds
    sit farthest from the band, one overview plot of every concept's seeds, every contact sheet,
    and the summaries list the concepts they do not draw."""
    from normguide.reporting.records import NORMS_OVERVIEW_KEY

    root = finished_run.copy(tmp_path / "run")
    for c in ("digit-two", "digit-five"):  # the full report's plots, so a stale one cannot pass
        (root / norms_key(c)).unlink()
    manifest = _manifest(root)
    worst = manifest.assign(a=manifest.seed_zscore.abs()).groupby("concept_id").a.max()
    far, near = worst.idxmax(), worst.idxmin()
    assert far != near
    record = write_report(finished_run.context(root).storage, max_plotted=1)

    assert [c.concept_id for c in record.shown] == [far]
    assert (root / norms_key(far)).read_bytes()[:8] == PNG and not (root / norms_key(near)).exists()
    assert all((root / sheet_key(c)).read_bytes()[:8] == PNG for c in (far, near))
    overview = (root / NORMS_OVERVIEW_KEY).read_bytes()
    assert overview[:8] == PNG and Image.open(io.BytesIO(overview)).size[0] > 300
    assert str(root / NORMS_OVERVIEW_KEY) in record.uris and str(root / norms_key(near)) not in record.uris
    index = (root / INDEX_KEY).read_text()
    assert "1 of 2 concepts are drawn here" in index and "](all_seed_norms.png)" in index
    assert "### The other 1 concept(s)" in index and f"| `{near}` |" in index
    assert f"]({near}/contact_sheet.png)" in index and f"![contact sheet of {near}]" not in index
    html = (root / "report" / "index.html").read_text()
    assert "all_seed_norms.png" in html and f"{near}/index.html" in html and f"{near}/seed_norms.png" not in html
    _, body = card_header((root / CARD_KEY).read_text())
    assert f"]({NORMS_OVERVIEW_KEY})" in body and f"]({norms_key(far)})" in body and norms_key(near) not in body
    with pytest.raises(ValueError, match="max_plotted"):
        write_report(finished_run.context(root).storage, max_plotted=0)


def test_report_needs_a_finalized_run(finished_run, tmp_path):
    root = finished_run.copy(tmp_path / "run")
    (root / "manifest.parquet").unlink()
    (root / CARD_KEY).unlink(missing_ok=True)  # the run wrote its card when it finished
    with pytest.raises(ValueError, match="no manifest.parquet"):
        write_report(finished_run.context(root).storage)
    assert not (root / CARD_KEY).exists()


def test_a_reference_that_is_gone_gets_a_placeholder_tile_not_an_error(finished_run, tmp_path):
    from normguide.data.seeds import SeedsFile

    root = finished_run.copy(tmp_path / "run")
    seeds_path = root / "seeds" / "digit-two.safetensors"
    seeds = SeedsFile.from_bytes(seeds_path.read_bytes())
    gone = [str(tmp_path / "gone.png"), *seeds.meta["reference_uris"][1:]]
    seeds_path.write_bytes(type(seeds)(inverted=seeds.inverted, meta={**seeds.meta, "reference_uris": gone},
                                       planned=seeds.planned, centroids=seeds.centroids).to_bytes())
    write_report(finished_run.context(root).storage)
    layout = sheet_layout([REFERENCES, NUM_IMAGES, NUM_IMAGES])
    with Image.open(root / sheet_key("digit-two")) as sheet:
        tile = sheet.convert("RGB").crop(layout.tile_boxes[0][0])
        grey = (np.asarray(tile) == 215).all(axis=-1).mean()
        assert grey > 0.5  # the placeholder, not the digit


def test_report_on_s3_matches_the_local_one(report, finished_run, s3_server, s3_bucket):
    local_record, local_root = report
    client = s3_server.client()
    for path in finished_run.root.rglob("*"):
        if path.is_file():
            client.put_object(Bucket=s3_bucket, Key=f"runs/r/{path.relative_to(finished_run.root)}", Body=path.read_bytes())
    cfg = finished_run.config.with_overrides(**{f"storage.{k}": v for k, v in s3_server.storage.items()})
    root = f"s3://{s3_bucket}/runs/r"
    store = Storage.open(root, storage_config=cfg.storage)
    record = write_report(store, storage_config=cfg.storage)
    assert record.card_uri == f"{root}/README.md"
    assert record.concepts[0].contact_sheet_uri == f"{root}/report/digit-two/contact_sheet.png"
    for c in ("digit-two", "digit-five"):  # the pictures do not depend on where the run lives
        for key in (sheet_key(c), norms_key(c)):
            assert store.read_bytes(key) == (local_root / key).read_bytes(), key
    header, body = card_header(store.read_bytes(CARD_KEY).decode())
    assert header["dataset_info"]["splits"][0]["num_examples"] == local_record.images
    assert f'root = "{root}"' in body and "storage_options" in body


def test_card_declares_the_exports_present(finished_run, tmp_path):
    root = finished_run.copy(tmp_path / "run")
    for m in METHODS:  # stand-ins: the card reads which files exist, not their content
        (root / "hf" / m).mkdir(parents=True)
        (root / "hf" / m / "train-00000-of-00001.parquet").write_bytes((root / "manifest.parquet").read_bytes())
    (root / "webdataset").mkdir()
    for i in range(2):
        (root / "webdataset" / f"shard-{i:05d}.tar").write_bytes(b"")
    record = write_report(finished_run.context(root).storage)
    assert record.formats == ["manifest", "hf", "webdataset"]
    header, body = card_header((root / CARD_KEY).read_text())
    paths = [f["path"] for c in header["configs"] for f in c["data_files"]]
    assert any(p.startswith("hf/") for p in paths) and "manifest.parquet" not in paths
    assert "datasets.load_dataset(" in body and "webdataset.WebDataset(" in body
    assert "shard-{00000..00001}.tar" in body


def test_card_reads_a_licence_from_the_run_record(finished_run, tmp_path):
    root = finished_run.copy(tmp_path / "run")
    doc = json.loads((root / "run.json").read_text())
    doc["config"]["license"] = "cc-by-4.0"
    (root / "run.json").write_text(json.dumps(doc))
    write_report(finished_run.context(root).storage)
    header, body = card_header((root / CARD_KEY).read_text())
    assert header["license"] == "cc-by-4.0" and "license_name" not in header
    assert "`cc-by-4.0`" in body


def test_sheet_layout_wraps_after_the_column_count():
    one_row, two_rows = sheet_layout([2, 8], columns=8), sheet_layout([2, 9], columns=8)
    assert two_rows.size[0] == one_row.size[0] and two_rows.size[1] > one_row.size[1]
    assert two_rows.tile_boxes[1][8][0] == two_rows.tile_boxes[1][0][0]  # the 9th tile starts the next row
    with pytest.raises(ValueError, match="columns"):
        sheet_layout([1], columns=0)


