"""Precision that cannot silently fail, and the throughput paths that run on CPU.

The failures are real: tiny real pipelines (``build_demo_pipeline``) whose weights are scaled so that
a layer overflows float16's range (65504) and not float32's, run in float16 on CPU through
``from_pipeline`` (which, unlike ``load_pipeline``, allows it). Nothing in diffusers is patched.
"""

import copy

import pytest
import torch
from PIL import Image

from normguide.diffusion import (
    GeneratedBatch,
    PrecisionError,
    build_demo_pipeline,
    decode_latents,
    float32_twin,
    from_pipeline,
    generate_images,
    invert_images,
    warm_up,
)

FP16_MAX = 65504.0


def _seeds(n, scale_from=None, scale=30.0, seed=0):
    s = torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(seed))
    if scale_from is not None:
        s[scale_from:] *= scale
    return s


def _scale_(layer, factor):
    with torch.no_grad():
        layer.weight.mul_(factor)
        layer.bias.mul_(factor)


def _overflow_(layer):
    """Scale a conv so that its weights still fit in fp16 (a real fp16 checkpoint's do) and its
    outputs, sums over its receptive field, do not."""
    _scale_(layer, 0.5 * FP16_MAX / float(torch.cat([layer.weight.abs().flatten(), layer.bias.abs()]).max()))


@pytest.fixture(scope="module")
def sd1_pipe():
    pipe = build_demo_pipeline("sd1")
    pipe.vae.register_to_config(force_upcast=False)  # a VAE that claims to be fp16-safe
    return pipe


def _model(pipe, dtype=torch.float32):
    return from_pipeline(copy.deepcopy(pipe), model_id="test", revision="test", dtype=dtype)


def _vae_overflow_model(pipe):
    """fp16 model whose VAE decoder overflows for large latents only: conv_in scaled so that the
    float32 activations of seeds 30x larger cross 65504 and those of unit seeds stay under it."""
    m32 = _model(pipe)
    peaks = []
    hook = m32.pipe.vae.decoder.conv_in.register_forward_hook(
        lambda mod, inp, out: peaks.append(out.abs().flatten(1).amax(1)))
    list(generate_images(m32, _seeds(4, scale_from=2), "a cat", num_inference_steps=2, batch_size=4,
                         batch_invariant=False))
    hook.remove()
    small, large = peaks[0][:2].max(), peaks[0][2:].min()
    assert large > 10 * small
    factor = float(FP16_MAX / (small * large).sqrt())
    broken = copy.deepcopy(pipe)
    _scale_(broken.vae.decoder.conv_in, factor)
    return _model(broken, torch.float16)


def test_overflowing_vae_is_retried_in_float32_per_sample(sd1_pipe):
    m = _vae_overflow_model(sd1_pipe)
    assert m.pipe.vae.decoder.conv_in.weight.dtype == torch.float16
    assert m.pipe.vae.encoder.conv_in.weight.dtype == torch.float32  # encoder upcast (no force_upcast)
    batches = list(generate_images(m, _seeds(4, scale_from=2), "a cat", num_inference_steps=2, batch_size=4,
                                   batch_invariant=False))
    (batch,) = batches
    assert isinstance(batch, GeneratedBatch) and len(batch) == 4
    assert batch.precision_fallback == [None, None, "vae", "vae"]
    for im in batch:
        lo, hi = im.convert("L").getextrema()
        assert hi > lo  # no constant (black) image
    # the same fp16 decoder without the retry: the large seeds really are NaN (no false alarm)
    from normguide.diffusion.ddim import _decode

    with torch.inference_mode():
        z = torch.randn(1, 4, 8, 8) * 1e3
        _, bad = _decode(m, z, False, None)
    assert bad.tolist() == [True]


def test_overflowing_unet_retries_the_whole_step_in_float32(sd1_pipe):
    broken = copy.deepcopy(sd1_pipe)
    _overflow_(broken.unet.conv_in)  # > 65504 in fp16; the next GroupNorm tames it in float32
    m = _model(broken, torch.float16)
    seeds = _seeds(3)
    out = [b for b in generate_images(m, seeds, "a cat", num_inference_steps=2, batch_size=2)]
    assert [b.precision_fallback for b in out] == [["full", "full"], ["full"]]
    # the retry is exactly the float32 twin's result
    twin = float32_twin(m)
    assert twin is float32_twin(m) and twin.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in twin.pipe.unet.parameters())
    assert m.pipe.unet.dtype == torch.float16  # the model itself is untouched
    expected = [im.tobytes() for b in generate_images(twin, seeds, "a cat", num_inference_steps=2, batch_size=2)
                for im in b]
    assert [im.tobytes() for b in out for im in b] == expected

    # inversion: z_T (and the regenerated z_0) overflow in fp16; retried in float32, recorded per image
    # (a larger VAE scaling factor gives z_0 the scale of the seeds above)
    broken.vae.register_to_config(scaling_factor=50.0)
    m = _model(broken, torch.float16)
    images = [Image.new("RGB", (64, 64), (i * 60, 100, 200 - i * 50)) for i in range(3)]
    res = invert_images(m, images, "a cat", num_inference_steps=2, batch_size=2)
    assert res.precision_fallback == ["full"] * 3
    assert torch.isfinite(res.seeds).all() and all(e == e for e in res.reconstruction_error)


def test_inversion_retries_an_overflowing_encoder_in_float32(sd1_pipe):
    broken = copy.deepcopy(sd1_pipe)
    _overflow_(broken.vae.encoder.conv_in)
    m = _model(broken, torch.float16)
    m.pipe.vae.encoder.half()  # a checkpoint whose encoder was left in fp16 (loading upcasts it)
    m.pipe.vae.quant_conv.half()
    images = [Image.new("RGB", (64, 64), (200, 30 * i, 10)) for i in range(2)]
    res = invert_images(m, images, "a cat", num_inference_steps=2, reconstruction=False)
    assert res.precision_fallback == ["vae", "vae"] and torch.isfinite(res.seeds).all()


def test_a_sample_that_fails_in_float32_too_fails_with_a_clear_error(sd1_pipe):
    dead = copy.deepcopy(sd1_pipe)
    with torch.no_grad():  # a decoder whose output is constant: every image one flat grey
        dead.vae.decoder.conv_out.weight.zero_()
        dead.vae.decoder.conv_out.bias.zero_()
    for dtype, said in ((torch.float32, "in float32;"), (torch.float16, "in float16 and again in float32")):
        m = _model(dead, dtype)
        gen = generate_images(m, _seeds(3), "a cat", num_inference_steps=1, batch_size=2)
        with pytest.raises(PrecisionError, match=r"generation for prompt 'a cat': sample\(s\) \[0, 1\]") as err:
            next(gen)
        assert said in str(err.value)


def test_decoded_bytes_are_the_diffusers_postprocess_bytes(demo):
    m = demo("sd1")
    z = torch.randn(3, *m.seed_shape, generator=torch.Generator().manual_seed(3)) * 5
    with torch.inference_mode():
        ours = decode_latents(m, z)
        x = m.pipe.vae.decode(z / m.pipe.vae.config.scaling_factor).sample
        theirs = m.pipe.image_processor.postprocess(x, output_type="pil")
    assert [a.tobytes() for a in ours] == [b.tobytes() for b in theirs]


@pytest.mark.slow  # over ~20 s: out of the fast tier (issue 23)
def test_compiled_unet_pads_the_last_batch_and_never_recompiles(sd1_pipe):
    """torch.compile with the 'eager' backend (Dynamo's tracing and guards, no C++ toolchain):
    after warm_up, 5 seeds in batches of 2 (the last padded) and every timestep run on the one
    compiled graph; a recompilation would raise."""
    import torch._dynamo

    torch._dynamo.reset()
    m = from_pipeline(copy.deepcopy(sd1_pipe), model_id="test", revision="test", compile="eager")
    assert m.compiled and float32_twin(m).compiled is False
    warm_up(m, batch_size=2, guidance_scale=7.5)
    with torch._dynamo.config.patch(error_on_recompile=True):
        out = [len(b) for b in generate_images(m, _seeds(5), "a cat", num_inference_steps=3, batch_size=2,
                                               batch_invariant=False)]
        res = invert_images(m, [Image.new("RGB", (64, 64), (9, 99, 199))] * 3, "a cat", num_inference_steps=2,
                            guidance_scale=7.5, batch_size=2, batch_invariant=False, reconstruction=False)
    assert out == [2, 2, 1] and res.seeds.shape[0] == 3
    torch._dynamo.reset()


def test_cpu_guarantee_a_seed_gives_the_same_image_whatever_its_batch(demo):
    """The documented CPU guarantee of the opt-in batch-invariant mode: bytes independent of batch
    size and of batch mates, here on the trained demo too."""
    from normguide.diffusion import get_pipeline

    m = get_pipeline("demo")
    seeds = torch.randn(4, *m.seed_shape, generator=torch.Generator().manual_seed(5))
    prompt = "a handwritten digit three"
    alone = [next(generate_images(m, seeds[i : i + 1], prompt, num_inference_steps=3))[0].tobytes() for i in range(4)]
    for bs in (2, 4):
        got = [im.tobytes() for b in generate_images(m, seeds.flip(0), prompt, num_inference_steps=3, batch_size=bs,
                                                     batch_invariant=True) for im in b]
        assert got[::-1] == alone


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_on_cuda_uses_the_fast_paths(dtype, images):
    from normguide.diffusion import load_pipeline

    m = load_pipeline("demo:sdxl", device="cuda", dtype=dtype)
    assert m.pipe.unet.dtype == getattr(torch, dtype)
    assert m.pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    if dtype == "float16":  # force_upcast: the VAE runs in float32
        assert m.pipe.vae.decoder.conv_in.weight.dtype == torch.float32
    res = invert_images(m, images, "a photo", num_inference_steps=2)
    assert torch.isfinite(res.seeds).all() and len(res.precision_fallback) == 2
    out = list(generate_images(m, res.seeds, "a photo", num_inference_steps=2, batch_size=2))
    assert len(out[0]) == 2 and len(out[0].precision_fallback) == 2
