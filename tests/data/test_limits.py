"""Limits (docs/limits.md): settings with defaults, each refusal one line naming what is wrong."""

from __future__ import annotations

import logging

import pytest

from normguide.config import LimitsConfig, RunConfig
from normguide.data.schema import ConceptTableError, parse_concept_table, write_concept_table


def _table(tmp_path, rows):
    path = tmp_path / "c.parquet"
    write_concept_table(rows, path)
    return path.read_bytes(), str(path)


def _problems(tmp_path, rows, **kw) -> list[str]:
    data, source = _table(tmp_path, rows)
    with pytest.raises(ConceptTableError) as ei:
        parse_concept_table(data, source=source, **kw)
    return ei.value.problems


def test_defaults_are_documented_values():
    lim = RunConfig().limits
    assert (lim.max_concepts, lim.max_references_per_concept, lim.max_images_per_concept, lim.max_steps,
            lim.max_prompt_chars, lim.max_prompt_tokens) == (100_000, 1_000, 100_000, 1_000, 2_000, None)
    # not part of the run id: they change no image
    assert RunConfig(limits={"max_steps": 5000}).run_id_for("t") == RunConfig().run_id_for("t")


def test_table_limits_name_the_concept(tmp_path):
    lim = LimitsConfig(max_concepts=3, max_references_per_concept=3, max_images_per_concept=5)
    rows = [{"concept_id": "many-refs", "name": "a", "reference_uris": [f"{i}.png" for i in range(4)]},
            {"concept_id": "many-images", "name": "b", "reference_uris": ["x.png"], "num_images": 6}]
    problems = _problems(tmp_path, rows, limits=lim)
    assert problems == [
        "column 'reference_uris', row 0 (concept_id='many-refs'): 4 reference images, more than "
        "limits.max_references_per_concept (3)",
        "column 'num_images', row 1 (concept_id='many-images'): expected an integer in 1..5 "
        "(limits.max_images_per_concept) or null, got 6"]
    rows = [{"concept_id": f"c{i}", "name": "a", "reference_uris": ["x.png"]} for i in range(4)]
    assert _problems(tmp_path, rows, limits=lim) == [
        "the table has 4 rows, more than limits.max_concepts (3); split it or raise the limit"]


def test_a_100_kb_prompt_is_refused_without_echoing_it(tmp_path, caplog):
    big = "a handwritten digit two " * 4200  # ~100 KB
    rows = [{"concept_id": "c1", "name": "two", "reference_uris": ["x.png"], "prompt": big},
            {"concept_id": "c2", "name": "five " * 500, "reference_uris": ["x.png"]}]
    with caplog.at_level(logging.DEBUG):
        problems = _problems(tmp_path, rows, template="a photo of a {name}")
    assert problems == [
        f"column 'prompt', row 0 (concept_id='c1'): its prompt is {len(big):,} characters long, more than "
        "limits.max_prompt_chars (2,000)",
        "column 'name', row 1 (concept_id='c2'): its prompt (the template with its name) is 2,513 characters "
        "long, more than limits.max_prompt_chars (2,000)"]
    assert "truncated" not in caplog.text  # today: logged twice per concept, 203 KB for 2 concepts


@pytest.mark.parametrize("overrides, expect", [
    ({"generation.num_inference_steps": 1001}, "generation.num_inference_steps is 1,001, more than limits.max_steps (1,000)"),
    ({"inversion.num_inference_steps": 5000}, "inversion.num_inference_steps is 5,000, more than limits.max_steps (1,000)"),
    ({"plan.num_images": 100_001}, "plan.num_images is 100,001, more than limits.max_images_per_concept (100,000)"),
    ({"prompt_template": "{name} " + "x" * 2000}, "prompt_template is 2,007 characters long, more than limits.max_prompt_chars"),
])
def test_config_limits_are_one_line(overrides, expect):
    with pytest.raises(ValueError) as ei:
        RunConfig().with_overrides(**overrides)
    assert str(ei.value) == f"invalid setting: {expect}" or expect in str(ei.value)
    assert "\n" not in str(ei.value)


def test_limits_can_be_raised():
    cfg = RunConfig().with_overrides(**{"limits.max_steps": 2000, "generation.num_inference_steps": 1500})
    assert cfg.generation.num_inference_steps == 1500


def test_prompt_tokens_are_checked_in_the_models_tokenizer(caplog):
    from normguide.diffusion import get_pipeline
    from normguide.diffusion.prompts import PromptTooLongError, check_prompt_tokens, token_limit

    model = get_pipeline("demo")
    assert token_limit(model) == 77 and token_limit(model, 10) == 10 and token_limit(model, 500) == 77
    check_prompt_tokens(model, "a handwritten digit two", concept_id="c1")
    long = "a handwritten digit two " * 20  # ~100 tokens, 480 characters: under the character cap
    with caplog.at_level(logging.DEBUG), pytest.raises(PromptTooLongError) as ei:
        check_prompt_tokens(model, long, concept_id="c1")
    assert str(ei.value).startswith("concept 'c1': its prompt has more than 77 tokens") and long not in str(ei.value)
    with pytest.raises(PromptTooLongError, match="more than 4 tokens .*limits.max_prompt_tokens"):
        check_prompt_tokens(model, "a handwritten digit two", concept_id="c1", setting=4)
    assert "longer than the specified maximum" not in caplog.text and "truncated" not in caplog.text
