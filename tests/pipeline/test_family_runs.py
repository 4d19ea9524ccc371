"""A whole run on a flow-matching tiny build (demo:flux: packed seeds, embedded guidance) through
the local driver: inverted with the flow ODE, planned, generated, manifest with its inverter and
seed health; and the seeds file's seeds given to the plain FluxPipeline give the run's PNG bytes."""

import pandas as pd
import torch

from normguide.data.schema import write_concept_table
from normguide.data.seeds import SeedsFile
from normguide.geometry.health import HEALTH_KEYS
from normguide.pipeline import run_dataset
from tests.factories import tiny_config
from tests.helpers import make_reference


def test_a_flux_run_completes_through_the_local_driver(tmp_path):
    refs = [str(make_reference(tmp_path / "in" / f"{i}.png", seed=3 + i)) for i in range(2)]
    write_concept_table([{"concept_id": "alpha", "name": "alpha", "reference_uris": refs}], tmp_path / "t.parquet")
    cfg = tiny_config(tmp_path / "t.parquet", tmp_path / "out", model="demo:flux", num_images=2, reconstruction=True,
                      guidance_scale=2.0, **{"evaluation.enabled": False})
    summary = run_dataset(cfg)
    assert summary.failed == []
    (root,) = (tmp_path / "out").iterdir()
    assert (root / "_SUCCESS").exists()
    m = pd.read_parquet(root / "manifest.parquet")
    assert len(m) == 2 and set(m.inverter) == {"flow-euler"}
    assert set(m.scheduler) == {"FlowMatchEulerDiscreteScheduler"} and set(m.width) == {16}
    assert (m.reconstruction_error < 0.05).all()
    # the seed-health record: per inverted seed in the seeds file, per generation seed in the manifest
    seeds = SeedsFile.from_bytes((root / "seeds" / "alpha.safetensors").read_bytes())
    assert [set(r) for r in seeds.meta["health"]] == [set(HEALTH_KEYS)] * 2
    assert [r["round_trip_error"] for r in seeds.meta["health"]] == seeds.reconstruction_errors
    cols = ["seed_autocorr_max", "seed_channel_mean_absmax", "seed_channel_var_min", "seed_channel_var_max"]
    assert m[cols].notna().all().all() and (m.seed_channel_var_min <= m.seed_channel_var_max).all()
    # independent reproduction: the seeds file's seeds, packed as FluxPipeline takes them, through the
    # plain pipeline (same batch of 2 as the run's generation.batch_size) give the run's PNG bytes
    from diffusers import FluxPipeline
    from PIL import Image

    from normguide.diffusion import get_pipeline
    from normguide.diffusion.families import for_model

    model = get_pipeline("demo:flux")
    pipe = FluxPipeline(**model.pipe.components)
    pipe.set_progress_bar_config(disable=True)
    family = for_model(model)
    with torch.inference_mode():
        bare = pipe(prompt=[m.prompt[0]] * 2, latents=family.pack(seeds.generation_seeds, model), num_inference_steps=2,
                    guidance_scale=2.0, height=16, width=16, max_sequence_length=family.max_sequence_length(pipe),
                    output_type="pil").images
    ids = [r.image_id for r in seeds.plan_rows]
    ours = [Image.open(root / "images" / "alpha" / f"{i}.png").convert("RGB").tobytes() for i in ids]
    assert ours == [im.tobytes() for im in bare]


def test_an_sd3_run_is_evaluated_exported_and_reported(tmp_path):
    """The later stages on a second new family (demo:sd3): evaluation with a CLIP judge from a local
    directory (a tiny random one), both exports and the report, through the local driver."""
    from tests.evaluation.conftest import build_tiny_clip

    clip = build_tiny_clip(tmp_path / "clip")
    rows = []
    for cid in ("alpha", "beta"):
        refs = [str(make_reference(tmp_path / "in" / cid / f"{i}.png", seed=7 * i + len(cid))) for i in range(2)]
        rows.append({"concept_id": cid, "name": cid, "reference_uris": refs})
    write_concept_table(rows, tmp_path / "t.parquet")
    cfg = tiny_config(tmp_path / "t.parquet", tmp_path / "out", model="demo:sd3", num_images=2, export=["hf", "webdataset"],
                      **{"evaluation.enabled": True, "evaluation.judge": "clip", "evaluation.clip_model": str(clip)})
    summary = run_dataset(cfg)
    assert summary.failed == [] and summary.evaluation_error is None and summary.report_error is None
    root = tmp_path / "out" / summary.run_id
    metrics = pd.read_parquet(root / "eval" / "metrics.parquet")
    assert {"nao", "references"} <= set(metrics.method) and metrics.recognisability.notna().any()
    assert set(summary.exports) == {"hf", "webdataset"}
    assert (root / "hf" / "_SUCCESS").exists() and list((root / "webdataset").glob("shard-*.tar"))
    assert (root / "README.md").exists() and (root / "report" / "index.html").exists()
