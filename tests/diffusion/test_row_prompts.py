"""Per-row prompts (issue 23, batches across concepts): ``generate_images`` takes one string or one
prompt per seed row, for every family. Batch-invariant, a batch that mixes prompts gives each row
the bytes of its own single-prompt call; batched, the SD demo gives bare diffusers' bytes for the
same prompt list and latents; a precision retry names and uses the row's own prompt."""

import copy

import pytest
import torch

from normguide.diffusion import PrecisionError, generate_images, get_pipeline

A, B = "a photo of the digit seven", "a drawing of the digit two"


def _seeds(model, n, seed=0):
    return torch.randn(n, *model.seed_shape, generator=torch.Generator().manual_seed(seed))


def _bytes(model, seeds, prompt, **kw):
    kw = {"num_inference_steps": 2, "guidance_scale": 3.0, **kw}
    return [im.tobytes() for b in generate_images(model, seeds, prompt, **kw) for im in b]


@pytest.mark.parametrize("family", ["sd1", "sdxl", "sd3", "flux", "pixart"])
def test_a_mixed_prompt_batch_is_each_rows_single_prompt_call_when_batch_invariant(family):
    m = get_pipeline(f"demo:{family}")
    seeds = _seeds(m, 3, 11)
    mixed = _bytes(m, seeds, [A, B, A], batch_size=3, batch_invariant=True)
    only_a = _bytes(m, seeds[[0, 2]], A, batch_size=2, batch_invariant=True)
    only_b = _bytes(m, seeds[[1]], B, batch_size=1, batch_invariant=True)
    assert mixed == [only_a[0], only_b[0], only_a[1]]
    assert mixed[1] != _bytes(m, seeds[[1]], A, batch_size=1, batch_invariant=True)[0]  # the prompt counts


def test_a_mixed_prompt_batch_gives_bare_diffusers_bytes_for_the_same_prompt_list(demo):
    m = demo("sd1")
    seeds = _seeds(m, 4, 12)
    prompts = [A, A, B, A]
    ours = _bytes(m, seeds, prompts, batch_size=4)
    with torch.inference_mode():
        bare = m.pipe(prompt=prompts, latents=seeds.clone(), num_inference_steps=2, guidance_scale=3.0,
                      output_type="pil").images
    assert ours == [im.tobytes() for im in bare]
    assert ours != _bytes(m, seeds, A, batch_size=4)  # the per-row prompt reached the UNet


def test_one_prompt_per_seed_is_required(demo):
    m = demo("sd1")
    with pytest.raises(ValueError, match="one string per seed: got 2 prompts for 3 seeds"):
        generate_images(m, _seeds(m, 3), [A, B])
    with pytest.raises(ValueError, match="strings only"):
        generate_images(m, _seeds(m, 2), [A, 7])


def test_a_retried_row_uses_its_own_prompt_and_a_failed_row_names_it():
    """Real float16 overflow (FLUX demo, a seed 3e4 times too large): the row alone is redone in
    float32 with its own prompt; a decoder that fails in float32 too names each failed row's prompt."""
    from normguide.diffusion import float32_twin, from_pipeline

    flux = get_pipeline("demo:flux")
    m16 = from_pipeline(copy.deepcopy(flux.pipe), model_id="fp16", revision="t", dtype=torch.float16)
    seeds = _seeds(m16, 3, 7)
    seeds[1] *= 3e4
    (batch,) = list(generate_images(m16, seeds, [A, B, A], num_inference_steps=2, batch_size=3))
    assert batch.precision_fallback == [None, "full", None]
    (alone,) = list(generate_images(float32_twin(m16), seeds[1:2], B, num_inference_steps=2, batch_size=1))
    assert batch[1].tobytes() == alone[0].tobytes()

    dead = copy.deepcopy(get_pipeline("demo:sd1").pipe)
    with torch.no_grad():  # a decoder whose output is constant: every image one flat grey
        dead.vae.decoder.conv_out.weight.zero_()
        dead.vae.decoder.conv_out.bias.zero_()
    m = from_pipeline(dead, model_id="dead", revision="t")
    with pytest.raises(PrecisionError, match=r"prompt 'a photo of the digit seven': sample\(s\) \[0, 2\]; "
                                             r"prompt 'a drawing of the digit two': sample\(s\) \[1\]"):
        next(generate_images(m, _seeds(m, 3), [A, B, A], num_inference_steps=1, batch_size=3))
