"""Model families behind one interface: the registry, the flow-matching demo builds (SD3, FLUX),
their inverters, and the independent reproduction of a product image by the plain diffusers
pipeline of each family (a seed, packed and scaled as that pipeline expects, gives the same bytes)."""

import json

import pytest
import torch

from normguide.diffusion import (
    FAMILIES,
    INVERTERS,
    UnsupportedFeatureError,
    UnsupportedPipelineError,
    generate_images,
    get_pipeline,
    invert_images,
    load_pipeline,
)
from normguide.diffusion.families import for_model, supported_pipelines
from normguide.diffusion.sampling import pack_seeds, unpack_latents
from normguide.errors import InputError

PROMPT = "a photo of the digit seven"


@pytest.fixture(scope="module")
def flow():
    return {f: get_pipeline(f"demo:{f}") for f in ("sd3", "flux", "pixart")}


def _seeds(model, n, seed=0):
    return torch.randn(n, *model.seed_shape, generator=torch.Generator().manual_seed(seed))


def test_every_family_and_pipeline_class_is_registered():
    assert FAMILIES == ("sd1", "sd2", "sd2-v", "sdxl", "sd3", "flux", "pixart")
    assert supported_pipelines() == ("StableDiffusionPipeline", "StableDiffusionXLPipeline",
                                     "StableDiffusion3Pipeline", "FluxPipeline", "PixArtSigmaPipeline",
                                     "PixArtAlphaPipeline")


def test_an_unsupported_pipeline_class_is_one_error_naming_it_and_the_families(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "KandinskyV22Pipeline"}))
    with pytest.raises(UnsupportedPipelineError) as info:
        load_pipeline(str(tmp_path))
    msg = str(info.value)
    assert isinstance(info.value, InputError) and "\n" not in msg
    assert "'KandinskyV22Pipeline'" in msg and str(tmp_path) in msg
    for name in ("sd1", "sdxl", "sd3", "flux", "pixart", "FluxPipeline", "StableDiffusion3Pipeline", "PixArtSigmaPipeline"):
        assert name in msg


@pytest.mark.parametrize("family", ["sd3", "flux", "pixart"])
def test_transformer_demo_builds_offline_with_their_family_geometry(flow, family):
    m = flow[family]
    assert (m.family, m.resolution, m.seed_shape, m.d) == (family, 16, (4, 8, 8), 256)
    flow_matching = family != "pixart"
    assert m.scheduler == ("FlowMatchEulerDiscreteScheduler" if flow_matching else "DDIMScheduler") and m.is_demo
    assert for_model(m).default_inverter == ("flow-euler" if flow_matching else "ddim")
    # the same build twice gives the same weights (seeded, in a forked RNG)
    a = load_pipeline(f"demo:{family}").pipe.transformer.state_dict()
    assert all(torch.equal(v, m.pipe.transformer.state_dict()[k]) for k, v in a.items())


def test_flux_seeds_are_stored_unpacked_and_packed_as_the_pipeline_packs(flow):
    from diffusers import FluxPipeline

    m = flow["flux"]
    z = _seeds(m, 3)
    packed = pack_seeds(m, z)
    assert packed.shape == (3, 16, 16)  # (B, (h/2)(w/2), 4C)
    assert torch.equal(packed, FluxPipeline._pack_latents(z, 3, 4, 8, 8))
    assert torch.equal(unpack_latents(m, packed), z)
    assert torch.allclose(packed.flatten(1).norm(dim=1), z.flatten(1).norm(dim=1))  # norms survive packing


@pytest.mark.parametrize("family,inverter", [("flux", "ddim"), ("sd1", "flow-euler"), ("sd3", "no-such")])
def test_an_inverter_the_family_cannot_run_is_refused_naming_both(flow, family, inverter, demo):
    m = flow.get(family) or demo(family)
    with pytest.raises(UnsupportedFeatureError, match=rf"'{inverter}'.*{family}"):
        invert_images(m, [], PROMPT, inverter=inverter)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_flow_inversion_is_exact_and_its_round_trip_falls_with_steps(flow, family):
    m = flow[family]
    images = [im for b in generate_images(m, _seeds(m, 2, 1), PROMPT, num_inference_steps=2, guidance_scale=2.0)
              for im in b]
    err = {}
    for inv in ("flow-euler", "flow-midpoint"):
        for n in (2, 8):
            r = invert_images(m, images, PROMPT, inverter=inv, num_inference_steps=n, reconstruction=True)
            again = invert_images(m, images, PROMPT, inverter=inv, num_inference_steps=n, reconstruction=False)
            assert torch.equal(r.seeds, again.seeds)  # deterministic: no noise mixed in
            err[inv, n] = max(r.reconstruction_error)
    assert err["flow-euler", 8] < err["flow-euler", 2] / 2
    assert err["flow-midpoint", 8] < err["flow-midpoint", 2] / 2
    assert err["flow-midpoint", 2] < err["flow-euler", 2]  # 4 calls vs 2; the benchmark compares at equal calls


def _fresh(pipe_cls, model):
    """A plain diffusers pipeline of the same components (not the product's object)."""
    pipe = pipe_cls(**model.pipe.components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.mark.parametrize("family", ["sd3", "flux", "pixart"])
def test_the_plain_diffusers_pipeline_gives_the_products_image_from_its_seed(flow, family):
    from diffusers import FluxPipeline, PixArtSigmaPipeline, StableDiffusion3Pipeline

    m = flow[family]
    seeds = _seeds(m, 2, 5)
    ours = [im.tobytes() for b in generate_images(m, seeds, PROMPT, num_inference_steps=3, guidance_scale=3.0,
                                                   batch_size=2) for im in b]
    fam = for_model(m)
    cls = {"flux": FluxPipeline, "sd3": StableDiffusion3Pipeline, "pixart": PixArtSigmaPipeline}[family]
    pipe = _fresh(cls, m)
    latents = pack_seeds(m, seeds) / fam.init_noise_sigma(m, 3)  # the pipeline multiplies by it (1 here)
    extra = {"clean_caption": False, "use_resolution_binning": False} if family == "pixart" else {}
    with torch.inference_mode():
        bare = pipe(prompt=[PROMPT] * 2, latents=latents, num_inference_steps=3, guidance_scale=3.0,
                    height=m.resolution, width=m.resolution, max_sequence_length=fam.max_sequence_length(pipe),
                    output_type="pil", **extra).images
    assert ours == [im.tobytes() for im in bare]


def test_the_plain_sdxl_pipeline_with_its_own_euler_scheduler_needs_the_seed_scaled(demo):
    """SDXL ships Euler (init_noise_sigma ≈ 14.6 at 1000 steps); normguide samples with DDIM (1).
    The plain pipeline with the product's DDIM scheduler reproduces the product's bytes from the
    seed as stored; the family's ``init_noise_sigma`` is what that pipeline multiplies by."""
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    m = demo("sdxl")
    seeds = _seeds(m, 2, 6)
    ours = [im.tobytes() for b in generate_images(m, seeds, PROMPT, num_inference_steps=3, guidance_scale=3.0,
                                                   batch_size=2) for im in b]
    pipe = _fresh(StableDiffusionXLPipeline, m)
    assert for_model(m).init_noise_sigma(m, 3) == 1.0
    with torch.inference_mode():
        bare = pipe(prompt=[PROMPT] * 2, latents=pack_seeds(m, seeds), num_inference_steps=3, guidance_scale=3.0,
                    height=m.resolution, width=m.resolution, output_type="pil").images
    assert ours == [im.tobytes() for im in bare]
    euler = EulerDiscreteScheduler.from_config(m.pipe.scheduler.config)
    euler.set_timesteps(3)
    assert euler.init_noise_sigma > 1.5  # its pipeline would scale a unit-variance seed up by this


def test_pixart_inverts_by_ddim_and_refuses_flow_inverters(flow):
    m = flow["pixart"]
    images = [im for b in generate_images(m, _seeds(m, 1, 2), PROMPT, num_inference_steps=2) for im in b]
    r = invert_images(m, images, PROMPT, num_inference_steps=4, reconstruction=True)
    assert r.seeds.shape == (1, 4, 8, 8) and r.reconstruction_error[0] < 0.05
    with pytest.raises(UnsupportedFeatureError, match="'flow-euler'.*pixart"):
        invert_images(m, images, PROMPT, inverter="flow-euler")


def test_the_inverter_registry_names_each_solver():
    assert set(INVERTERS) >= {"ddim", "flow-euler", "flow-midpoint", "flow-fireflow"}
    assert {INVERTERS[n].kind for n in ("flow-euler", "flow-midpoint", "flow-fireflow")} == {"flow"}


def test_a_flux_sample_that_overflows_float16_is_generated_again_in_float32(flow):
    """Real overflow, nothing patched: a seed 3e4 times too large overflows the float16 transformer
    on CPU; that sample alone is redone with every component in float32, its batch mates are not."""
    import copy

    from normguide.diffusion import float32_twin, from_pipeline

    m16 = from_pipeline(copy.deepcopy(flow["flux"].pipe), model_id="fp16", revision="t", dtype=torch.float16)
    seeds = _seeds(m16, 3, 7)
    seeds[1] *= 3e4
    (batch,) = list(generate_images(m16, seeds, PROMPT, num_inference_steps=2, batch_size=3))
    assert batch.precision_fallback == [None, "full", None]
    (alone,) = list(generate_images(float32_twin(m16), seeds[1:2], PROMPT, num_inference_steps=2, batch_size=1))
    assert batch[1].tobytes() == alone[0].tobytes()
