"""Names with control characters (a run made before names were checked) are escaped wherever
the report draws or prints them; a concept whose pictures fail is named."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from normguide.data.text import control_characters
from normguide.reporting import write_report
from tests.reporting.test_show import show

EVIL = "two\nlines \u202eevil\x1b[31m"


def _rename(root, name: str) -> None:
    path = root / "manifest.parquet"
    table = pq.read_table(path)
    i = table.schema.get_field_index("name")
    table = table.set_column(i, table.schema.field(i), pa.array([name] * table.num_rows, table.schema.field(i).type))
    pq.write_table(table, path)


def test_report_and_show_escape_control_characters_of_an_old_run(finished_run, tmp_path):
    root = finished_run.copy(tmp_path / "run")
    _rename(root, EVIL)
    # today: the contact sheet fails ("can't measure length of multiline text"), naming nothing
    write_report(finished_run.context(root).storage)
    for md in (root / "README.md", root / "report" / "index.md"):
        text = md.read_text()
        assert "\u202e" not in text and "\x1b" not in text and "two\\nlines \\u202eevil\\x1b[31m" in text
    res = show(str(root))
    assert res.exit_code == 0, res.output
    assert not [c for c in res.output if c != "\n" and control_characters(c)], repr(res.output)
    assert "two\\nlines \\u202eevil" in res.output


def test_a_failing_contact_sheet_names_its_concept(finished_run, tmp_path):
    root = finished_run.copy(tmp_path / "run")
    image = next((root / "images" / "digit-five").glob("*.png"))
    image.write_bytes(b"not a png")
    import pytest

    with pytest.raises(ValueError, match=r"report of concept 'digit-five' \('five'\) failed: UnidentifiedImageError"):
        write_report(finished_run.context(root).storage)
