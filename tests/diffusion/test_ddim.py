"""DDIM inversion and generation on the tiny pipelines of every SD family."""

import threading

import pytest
import torch
from PIL import Image

from normguide.diffusion import (
    InversionResult,
    generate_images,
    invert_images,
    prepare_image,
)
from normguide.diffusion.loading import ddim_scheduler_config

FAMILIES = ["sd1", "sd2", "sd2-v", "sdxl"]


@pytest.mark.parametrize("family", FAMILIES)
def test_invert_then_generate_every_family(demo, images, family):
    m = demo(family)
    res = invert_images(m, images, "a photo of a thing", num_inference_steps=2, batch_size=2)
    assert isinstance(res, InversionResult)
    for t in (res.seeds, res.latents):
        assert t.shape == (2, *m.seed_shape) and t.dtype == torch.float32 and t.device.type == "cpu"
        assert torch.isfinite(t).all()
    assert not torch.equal(res.seeds, res.latents)
    assert len(res.reconstruction_error) == 2 and all(e >= 0 for e in res.reconstruction_error)

    batches = list(generate_images(m, res.seeds, "a photo of a thing", num_inference_steps=2, batch_size=1))
    assert [len(b) for b in batches] == [1, 1]
    for im in (b[0] for b in batches):
        assert isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (m.resolution, m.resolution)


def test_inversion_is_deterministic_and_optional_reconstruction(demo, images):
    m = demo("sd1")
    a = invert_images(m, images, "a dog", num_inference_steps=3, reconstruction=False)
    b = invert_images(m, images, "a dog", num_inference_steps=3, reconstruction=False)
    assert a.reconstruction_error is None
    assert torch.equal(a.seeds, b.seeds) and torch.equal(a.latents, b.latents)


@pytest.mark.parametrize("family", ["sd1", "sd2-v"])
def test_reconstruction_error_shrinks_with_more_steps(demo, make_images, family):
    m = demo(family)
    imgs = make_images(2, seed=1)
    errors = {
        s: invert_images(m, imgs, "a photo", num_inference_steps=s, batch_invariant=False).reconstruction_error
        for s in (2, 10, 50)
    }
    for i in range(2):
        assert errors[50][i] < errors[10][i] < errors[2][i], errors
    assert max(errors[50]) < 0.5 * min(errors[2])


def test_sd2v_demo_inversions_land_on_the_gaussian_shell(demo, make_images):
    """The sd2-v demo behaves like a trained model here (see demo.py): seed norms near √d."""
    m = demo("sd2-v")
    res = invert_images(m, make_images(2, seed=4), "a photo", num_inference_steps=50, reconstruction=False,
                        batch_invariant=False)
    norms = res.seeds.flatten(1).norm(dim=1) / m.d**0.5
    assert ((norms > 0.8) & (norms < 1.2)).all(), norms


def test_reconstruction_with_guidance_still_reports_per_image(demo, images):
    res = invert_images(demo("sdxl"), images, "a cat", num_inference_steps=2, guidance_scale=3.0)
    assert len(res.reconstruction_error) == 2


def test_generate_yields_one_list_per_batch_in_order(demo):
    m = demo("sd1")
    seeds = torch.randn(5, *m.seed_shape, generator=torch.Generator().manual_seed(0))
    gen = generate_images(m, seeds, "a bird", num_inference_steps=2, batch_size=2)
    first = next(gen)  # streaming: the first batch arrives before the rest is computed
    assert not torch.is_inference_mode_enabled()  # no state leaks into the consumer between batches
    rest = list(gen)
    assert [len(first)] + [len(b) for b in rest] == [2, 2, 1]
    # batch-invariant mode, so that the first batch's bytes can be checked against single-seed runs
    first = next(generate_images(m, seeds, "a bird", num_inference_steps=2, batch_size=2, batch_invariant=True))
    singles = [b[0] for b in generate_images(m, seeds, "a bird", num_inference_steps=2, batch_size=1)]
    assert [im.tobytes() for im in first] == [im.tobytes() for im in singles[:2]]


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_batch_invariant_mode_is_batch_size_invariant_on_cpu(demo, make_images, family):
    """The opt-in mode (``batch_invariant=True``; batched is the default): bytes do not depend on
    the batch size, for generation and inversion."""
    m = demo(family)
    seeds = torch.randn(3, *m.seed_shape, generator=torch.Generator().manual_seed(1))
    by_batch = {
        bs: [im.tobytes() for b in generate_images(m, seeds, "a fish", num_inference_steps=3, batch_size=bs,
                                                     batch_invariant=True) for im in b]
        for bs in (1, 2, 3)
    }
    assert by_batch[1] == by_batch[2] == by_batch[3]
    # inversion too: an image's seed does not depend on its batch mates
    imgs = make_images(3)
    one = invert_images(m, imgs, "a fish", num_inference_steps=2, batch_size=1, reconstruction=False,
                        batch_invariant=True)
    three = invert_images(m, imgs, "a fish", num_inference_steps=2, batch_size=3, reconstruction=False,
                          batch_invariant=True)
    assert torch.equal(one.seeds, three.seeds)


def test_concurrent_threads_get_the_sequential_result(demo):
    m = demo("sd1")
    seeds = torch.randn(2, *m.seed_shape, generator=torch.Generator().manual_seed(2))
    expected = [im.tobytes() for b in generate_images(m, seeds, "a tree", num_inference_steps=2) for im in b]
    results, errors = [None] * 3, []

    def work(i):
        try:
            results[i] = [im.tobytes() for b in generate_images(m, seeds, "a tree", num_inference_steps=2) for im in b]
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and all(r == expected for r in results)


def test_generate_accepts_seeds_on_any_dtype_and_rejects_bad_input(demo):
    m = demo("sd1")
    seeds = torch.randn(1, *m.seed_shape, dtype=torch.float64)
    assert len(next(generate_images(m, seeds, "x", num_inference_steps=1))) == 1
    # checked at the call, before any iteration
    with pytest.raises(ValueError, match="seeds must have shape"):
        generate_images(m, torch.randn(1, 4, 16, 16), "x")
    with pytest.raises(ValueError, match="guidance_scale"):
        generate_images(m, seeds, "x", guidance_scale=0.5)
    with pytest.raises(ValueError, match="num_inference_steps"):
        generate_images(m, seeds, "x", num_inference_steps=0)
    with pytest.raises(ValueError, match="finite"):
        generate_images(m, torch.full((1, *m.seed_shape), float("nan")), "x")
    with pytest.raises(ValueError, match="images"):
        invert_images(m, [], "x")
    assert list(generate_images(m, seeds[:0], "x")) == []


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("set_alpha_to_one", [False, True])
@pytest.mark.parametrize("steps", [1, 3, 7, 50])
def test_inverse_and_forward_ddim_schedules_are_a_matching_pair(spacing, set_alpha_to_one, steps):
    """With a noise estimate that does not depend on z, a DDIM step is affine and the inverse
    scheduler's step must undo the forward one exactly (up to float32 rounding)."""
    from diffusers import DDIMInverseScheduler, DDIMScheduler

    cfg = ddim_scheduler_config(
        {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012, "steps_offset": 1,
         "timestep_spacing": spacing, "set_alpha_to_one": set_alpha_to_one}
    )
    fwd, inv = DDIMScheduler.from_config(cfg), DDIMInverseScheduler.from_config(cfg)
    fwd.set_timesteps(steps)
    inv.set_timesteps(steps)
    assert inv.timesteps.tolist() == fwd.timesteps.flip(0).tolist()
    g = torch.Generator().manual_seed(0)
    z0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    z = z0.clone()
    for t in inv.timesteps.tolist():
        z = inv.step(eps, t, z).prev_sample
    for t in fwd.timesteps.tolist():
        z = fwd.step(eps, t, z).prev_sample
    torch.testing.assert_close(z, z0, atol=1e-4, rtol=1e-4)


def test_ddim_config_fixes_what_ddim_defaults_get_wrong_for_latents():
    euler_like = {"_class_name": "EulerDiscreteScheduler", "timestep_spacing": "linspace", "beta_schedule": "scaled_linear"}
    cfg = ddim_scheduler_config(euler_like)
    assert cfg["clip_sample"] is False and cfg["set_alpha_to_one"] is False
    assert cfg["timestep_spacing"] == "leading" and "_class_name" not in cfg
    kept = ddim_scheduler_config({"clip_sample": True, "set_alpha_to_one": True, "timestep_spacing": "trailing"})
    assert kept["clip_sample"] is True and kept["set_alpha_to_one"] is True and kept["timestep_spacing"] == "trailing"


def test_prepare_image_makes_rgb_square_center_crops():
    rgba = Image.new("RGBA", (100, 60), (255, 0, 0, 0))
    rgba.paste((0, 0, 255, 255), (40, 0, 60, 60))
    out = prepare_image(rgba, 64)
    assert out.mode == "RGB" and out.size == (64, 64)
    assert out.getpixel((32, 32))[2] > 200  # the centre stripe survives the crop
    assert out.getpixel((0, 32)) == (255, 255, 255)  # transparent -> white
    tall = prepare_image(Image.new("L", (30, 90), 128), 64)
    assert tall.size == (64, 64) and tall.mode == "RGB"


@pytest.mark.gpu
def test_fp16_on_cuda_inverts_and_generates(images):
    from normguide.diffusion import load_pipeline

    for family in ("sd1", "sdxl"):
        m = load_pipeline(f"demo:{family}", device="cuda", dtype="float16")
        assert m.dtype == torch.float16 and m.device.type == "cuda"
        res = invert_images(m, images, "a photo", num_inference_steps=2)
        assert res.seeds.dtype == torch.float32 and res.seeds.device.type == "cpu"
        assert torch.isfinite(res.seeds).all() and all(e == e for e in res.reconstruction_error)
        out = next(generate_images(m, res.seeds.cuda(), "a photo", num_inference_steps=2, batch_size=2))
        assert len(out) == 2 and out[0].size == (64, 64)
