"""MFU and cost in every run (issue 23, item 4): run.json ``cost``, the CLI summary, the dataset
card; a price is not content (same run id, same bytes); a bad price is refused naming its field."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from normguide.cli import app
from normguide.config import RunConfig
from normguide.data.schema import write_concept_table
from normguide.diffusion import get_pipeline
from normguide.pipeline import resolved_run_id, run_dataset
from tests.factories import tiny_config
from tests.helpers import make_reference


@pytest.fixture
def table(tmp_path):
    refs = [str(make_reference(tmp_path / "in" / f"{i}.png", seed=3 * i + 1)) for i in range(2)]
    write_concept_table([{"concept_id": "alpha", "name": "alpha", "reference_uris": refs}], tmp_path / "in" / "c.parquet")
    return tmp_path / "in" / "c.parquet"


def _images(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted((root / "images").rglob("*.png"))}


def test_run_json_summary_and_card_carry_consistent_mfu_and_cost_and_the_price_is_not_content(table, tmp_path):
    model = get_pipeline("demo:sd1")  # the process's copy: no load of its own
    priced = tiny_config(table, tmp_path / "a", num_images=3, guidance_scale=2.0,
                         **{"cost.device_price_per_hour": 2.5, "cost.peak_tflops": 0.5, "evaluation.enabled": False})
    plain = tiny_config(table, tmp_path / "b", num_images=3, guidance_scale=2.0, **{"evaluation.enabled": False})
    summary = run_dataset(priced, model=model)
    assert summary.ok and summary.finalized
    root = tmp_path / "a" / resolved_run_id(priced)
    cost = json.loads((root / "run.json").read_text())["cost"]

    # every field, consistent with each other and with the summary
    assert cost == summary.cost.model_dump(mode="json")
    assert cost["images"] == 3 and cost["generation_seconds"] > 0 and cost["device"] == "cpu"
    assert cost["flops_per_image"] > 0 and cost["flops_note"] is None
    assert cost["images_per_s_per_device"] == pytest.approx(3 / cost["generation_seconds"])
    assert cost["achieved_tflops"] == pytest.approx(cost["flops_per_image"] * 3 / cost["generation_seconds"] / 1e12)
    assert cost["peak_tflops"] == 0.5 and cost["mfu"] == pytest.approx(cost["achieved_tflops"] / 0.5)
    assert cost["price_per_hour"] == 2.5
    assert cost["usd_per_1000_images"] == pytest.approx(2.5 / 3600 / cost["images_per_s_per_device"] * 1000)
    from normguide.diffusion.flops import flops_per_image

    assert cost["flops_per_image"] == flops_per_image(model, steps=2, guidance_scale=2.0)  # the model actually used

    # the CLI prints them under the summary table
    from rich.console import Console

    from normguide.cli.console import print_summary

    console = Console(file=io.StringIO(), width=200)
    print_summary(console, summary)
    printed = console.file.getvalue()
    assert f"generation: 3 image(s) in {cost['generation_seconds']:.2f} s of model time" in printed
    assert f"MFU: {cost['mfu']:.2%} of 0.5 TFLOP/s peak" in printed and "per 1,000 images at $2.5/h" in printed

    card = (root / "README.md").read_text()
    section = card.split("## Cost", 1)[1].split("\n## ", 1)[0]
    assert f"${cost['usd_per_1000_images']:.4f} per 1,000 images at $2.5/h" in section
    assert f"{cost['mfu']:.2%} of 0.5 TFLOP/s peak" in section and "3 image(s)" in section

    # the price and peak are not content: same run id, same image bytes; unpriced, on CPU: nulls
    assert resolved_run_id(plain) == resolved_run_id(priced)
    assert run_dataset(plain, model=model).ok
    other = tmp_path / "b" / resolved_run_id(plain)
    assert _images(other) == _images(root) and len(_images(root)) == 3
    bare = json.loads((other / "run.json").read_text())["cost"]
    assert bare["price_per_hour"] is None and bare["usd_per_1000_images"] is None
    assert bare["peak_tflops"] is None and bare["mfu"] is None and "set cost.peak_tflops" in bare["peak_note"]
    assert bare["flops_per_image"] == cost["flops_per_image"]
    assert "not priced" in (other / "README.md").read_text().split("## Cost", 1)[1]

    # a rerun of the complete run generates nothing: the record of the invocation that did stays
    again = run_dataset(priced, model=model)
    assert again.already_complete and again.cost is None
    assert json.loads((root / "run.json").read_text())["cost"] == cost


def test_a_price_is_refused_when_negative_naming_the_field_and_never_enters_the_run_id(table, tmp_path):
    base = RunConfig()
    assert base.run_id_for("t") == base.with_overrides(**{"cost.device_price_per_hour": 3.0,
                                                          "cost.peak_tflops": 989.0}).run_id_for("t")
    for field, value in (("cost.device_price_per_hour", -1.0), ("cost.device_price_per_hour", float("nan")),
                         ("cost.peak_tflops", 0.0)):
        with pytest.raises(ValueError, match=field.replace(".", r"\.")) as err:
            base.with_overrides(**{field: value})
        assert "\n" not in str(err.value)
    result = CliRunner().invoke(app, ["run", "--concepts", str(table), "--output", str(tmp_path / "o"),
                                      "--price-per-hour", "-2"])
    assert result.exit_code == 2
    assert "cost.device_price_per_hour" in result.output and "got -2.0" in result.output
    assert not (tmp_path / "o").exists()


def test_a_fan_out_sums_its_shards_records_and_recomputes_rates_at_the_runs_price(table, tmp_path):
    """A fan-out's shards (finalize off) each record their cost under timings/; the parent sums
    the shards it launched: images, device-seconds and FLOPs summed, rates recomputed at the
    run's price; the scope names the shards and devices; earlier records are forgotten first."""
    from normguide.data import layout
    from normguide.pipeline import RunContext
    from normguide.pipeline.results import RunCost
    from normguide.pipeline.throughput import forget_shard_costs, record_cost, shards_cost

    ctx = RunContext.create(tiny_config(table, tmp_path / "o", **{"cost.device_price_per_hour": 3.6}))

    def shard(images, seconds, flops, device, peak):
        return RunCost(scope="x", images=images, generation_seconds=seconds, flops_per_image=flops,
                       images_per_s_per_device=images / seconds, achieved_tflops=None, peak_tflops=peak, mfu=None,
                       price_per_hour=None, usd_per_1000_images=None, device=device, dtype="float16")

    record_cost(ctx, shard(4, 2.0, 10**12, "cuda:0", 100.0), ["a", "b"])
    record_cost(ctx, shard(2, 3.0, 4 * 10**12, "cuda:0", 100.0), ["c"])
    assert ctx.storage.exists(layout.shard_cost_key(["c"])) and not ctx.storage.exists("run.json")

    cost = shards_cost(ctx, [["a", "b"], ["c"], ["d"]])  # d's shard generated nothing
    assert cost.images == 6 and cost.generation_seconds == 5.0 and cost.device == "cuda:0"
    assert cost.flops_per_image == 2 * 10**12  # (4 x 1 + 2 x 4) TFLOP over 6 images
    assert cost.images_per_s_per_device == pytest.approx(6 / 5.0)
    assert cost.achieved_tflops == pytest.approx(12 / 5.0) and cost.mfu == pytest.approx(12 / 5.0 / 100)
    assert cost.price_per_hour == 3.6 and cost.usd_per_1000_images == pytest.approx(3.6 * 5.0 / 3600 / 6 * 1000)
    assert cost.scope.startswith("the sum of 2 shards of a fan-out, on cuda:0")
    assert "1 of the 3 launched recorded no generation" in cost.scope

    # shards on devices of other peaks: no MFU, said why; both devices named
    record_cost(ctx, shard(1, 1.0, 10**12, "cpu", None), ["d"])
    mixed = shards_cost(ctx, [["a", "b"], ["d"]])
    assert mixed.mfu is None and "different peaks" in mixed.peak_note and mixed.device == "cpu, cuda:0"
    assert "on cpu, cuda:0" in mixed.scope

    forget_shard_costs(ctx, [["a", "b"], ["c"], ["d"]])
    assert shards_cost(ctx, [["a", "b"], ["c"], ["d"]]) is None
