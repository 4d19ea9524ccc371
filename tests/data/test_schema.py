"""The concept-table schema: every violation named with its column, concept and expectation."""

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from normguide.data.schema import (
    ConceptTableError,
    check_safe_id,
    parse_concept_table,
    write_concept_table,
)


def _bytes(rows=None, table=None):
    buf = io.BytesIO()
    if table is not None:
        pq.write_table(table, buf)
    else:
        write_concept_table(rows, buf)
    return buf.getvalue()


GOOD = {"concept_id": "c1", "name": "one", "reference_uris": ["a.png", "/abs/b.png", "s3://bkt/c.png"], "prompt": None, "num_images": None}


def test_valid_table_resolves_relative_references():
    t = parse_concept_table(_bytes([GOOD]), source="/data/tables/concepts.parquet")
    (c,) = t.concepts
    assert c.concept_id == "c1" and c.name == "one"
    assert c.reference_uris == ("/data/tables/a.png", "/abs/b.png", "s3://bkt/c.png")
    assert c.resolved_prompt("a photo of a {name}") == "a photo of a one"


def test_relative_references_resolve_against_s3_table():
    t = parse_concept_table(_bytes([GOOD]), source="s3://bkt/tables/concepts.parquet")
    assert t.concepts[0].reference_uris[0] == "s3://bkt/tables/a.png"


def test_prompt_and_count_override():
    t = parse_concept_table(_bytes([dict(GOOD, prompt="custom", num_images=3)]), source="x.parquet")
    assert t.concepts[0].resolved_prompt("ignored {name}") == "custom"
    assert t.concepts[0].num_images == 3


def _problems(data, source="t.parquet"):
    with pytest.raises(ConceptTableError) as ei:
        parse_concept_table(data, source=source)
    assert source in str(ei.value)
    return ei.value.problems


def test_missing_and_extra_columns():
    table = pa.table({"concept_id": ["a"], "label": ["x"]})
    probs = _problems(_bytes(table=table))
    assert any("missing required column(s) ['name', 'reference_uris']" in p for p in probs)
    assert any("unexpected column(s) ['label']" in p for p in probs)


def test_wrong_types_name_the_column():
    table = pa.table({"concept_id": [1], "name": ["x"], "reference_uris": ["a.png"]})
    probs = _problems(_bytes(table=table))
    assert any("column 'concept_id' has type int64, expected string" in p for p in probs)
    assert any("column 'reference_uris' has type string, expected list<string>" in p for p in probs)


def test_empty_table():
    probs = _problems(_bytes([GOOD])[:0] or _bytes(table=pa.table({
        "concept_id": pa.array([], pa.string()), "name": pa.array([], pa.string()),
        "reference_uris": pa.array([], pa.list_(pa.string()))})))
    assert any("no rows" in p for p in probs)


def test_not_parquet():
    probs = _problems(b"concept_id,name\nx,y\n")
    assert "not a readable Parquet file" in probs[0]


@pytest.mark.parametrize("bad", ["../etc", "a/b", "", "x" * 129, "sp ace", "..", "a..b", "é"])
def test_unsafe_ids_rejected(bad):
    probs = _problems(_bytes([dict(GOOD, concept_id=bad)]))
    assert any("column 'concept_id'" in p and repr(bad) in p for p in probs)


def test_duplicates_empty_refs_bad_counts_all_reported():
    rows = [GOOD, dict(GOOD, name=""), dict(GOOD, concept_id="c2", reference_uris=[]), dict(GOOD, concept_id="c3", num_images=0)]
    probs = _problems(_bytes(rows))
    assert any("row 1 (concept_id='c1'): duplicate of row 0" in p for p in probs)
    assert any("column 'name', row 1" in p for p in probs)
    assert any("column 'reference_uris', row 2 (concept_id='c2')" in p and "at least one" in p for p in probs)
    assert any("column 'num_images', row 3 (concept_id='c3')" in p for p in probs)


def test_check_safe_id():
    assert check_safe_id("a-B_9.x", field="f") == "a-B_9.x"
    with pytest.raises(ValueError, match="run_id must match"):
        check_safe_id("a/b", field="run_id")


def test_select_unknown_ids():
    t = parse_concept_table(_bytes([GOOD]), source="t.parquet")
    assert [c.concept_id for c in t.select(["c1"])] == ["c1"]
    with pytest.raises(ValueError, match=r"\['nope'\]"):
        t.select(["nope"])
