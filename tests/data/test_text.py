"""Prompt templates substitute only ``{name}`` as plain text; names and prompts hold no control
characters (normguide.data.text)."""

from __future__ import annotations

import pytest

from normguide.config import RunConfig
from normguide.data.schema import Concept, ConceptTableError, parse_concept_table, write_concept_table
from normguide.data.text import TemplateError, check_template, printable, render_template

REFUSED_TEMPLATES = [
    ("a photo of {name.upper}", "attribute access"),
    ("{name.__class__}", "attribute access"),
    ("{name[0]}", "indexing"),
    ("{name!r}", "conversions"),
    ("{name:>200000000}", "format specs"),
    ("{}", "not a known field"),
    ("{0}", "not a known field"),
    ("{thing}", "not a known field"),
    ("a {", "not a valid template"),
]


@pytest.mark.parametrize("template, why", REFUSED_TEMPLATES)
def test_templates_beyond_plain_name_are_refused_naming_the_template(template, why):
    with pytest.raises(TemplateError, match=why) as ei:
        check_template(template, where="prompt_template")
    assert str(ei.value).startswith("prompt_template ") and "\n" not in str(ei.value)
    # the config refuses them in one line naming the field (today {name.upper} and the 200 MB
    # format spec were accepted)
    with pytest.raises(ValueError, match="prompt_template") as ei:
        RunConfig().with_overrides(prompt_template=template)
    assert "\n" not in str(ei.value)
    # and the concept's prompt is never rendered from them
    with pytest.raises(TemplateError):
        Concept("c", "seven", ("r.png",)).resolved_prompt(template)


def test_name_is_substituted_as_plain_text():
    assert render_template("a photo of a {name}, {{literal}} {name}", name="{name.upper}") == \
        "a photo of a {name.upper}, {literal} {name.upper}"
    assert Concept("c", "x{0}", ("r.png",)).resolved_prompt("a {name}") == "a x{0}"
    # a concept's own prompt is verbatim, braces included
    assert Concept("c", "n", ("r.png",), prompt="a {name.upper} {").resolved_prompt("a {name}") == "a {name.upper} {"


def test_clip_judge_template_is_checked_before_any_model(tmp_path):
    from normguide.evaluation.judges import ClipJudge

    with pytest.raises(TemplateError, match="CLIP judge prompt_template .* format specs"):
        ClipJudge(tmp_path / "no-such-model", prompt_template="{name:>99}")


BAD_TEXT = [("two\nlines", "'\\n'"), ("nul\x00", "'\\x00'"), ("evil\u202egnp.exe", "'\\u202e' (U+202E RIGHT-TO-LEFT OVERRIDE)"),
            ("esc\x1b[31mred", "'\\x1b'"), ("zero\u200bwidth", "'\\u200b'"), ("line\u2028sep", "'\\u2028'")]


@pytest.mark.parametrize("text, shown", BAD_TEXT)
def test_control_characters_in_names_and_prompts_are_refused_naming_concept_and_character(tmp_path, text, shown):
    path = tmp_path / "c.parquet"
    write_concept_table([{"concept_id": "c1", "name": text, "reference_uris": ["a.png"]},
                         {"concept_id": "c2", "name": "fine", "reference_uris": ["a.png"], "prompt": f"a {text}"}], path)
    with pytest.raises(ConceptTableError) as ei:
        parse_concept_table(path.read_bytes(), source=str(path))
    lines = str(ei.value).splitlines()[1:]
    assert len(lines) == 2, lines
    assert "column 'name', row 0 (concept_id='c1')" in lines[0] and shown in lines[0]
    assert "column 'prompt', row 1 (concept_id='c2')" in lines[1] and shown in lines[1]
    assert text not in str(ei.value)  # the raw character is never echoed


def test_joiners_and_ordinary_unicode_are_names(tmp_path):
    path = tmp_path / "c.parquet"
    names = ["سیب\u200cها", "👩\u200d🔬", "Ω ß 七"]
    write_concept_table([{"concept_id": f"c{i}", "name": n, "reference_uris": ["a.png"]} for i, n in enumerate(names)], path)
    assert [c.name for c in parse_concept_table(path.read_bytes(), source=str(path)).concepts] == names


def test_printable_escapes_every_control_character():
    assert printable("a\nb\u202ec\x00d\te") == "a\\nb\\u202ec\\x00d\\te"
    assert printable("plain ✓") == "plain ✓"
