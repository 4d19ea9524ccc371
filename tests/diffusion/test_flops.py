"""FLOPs per image from the model (FlopCounterMode on one forward, cached), MFU and cost."""

import pytest

from normguide.diffusion import get_pipeline
from normguide.diffusion.flops import device_peak_tflops, flops_per_image, unet_flops_per_row, utilisation, vae_decode_flops


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_flops_per_image_counts_unet_rows_steps_and_one_decode(family):
    m = get_pipeline(f"demo:{family}")
    unet, vae = unet_flops_per_row(m), vae_decode_flops(m)
    assert unet > 0 and vae > 0
    assert flops_per_image(m, steps=10, guidance_scale=7.5) == 2 * 10 * unet + vae  # CFG: two rows a step
    assert flops_per_image(m, steps=10, guidance_scale=1.0) == 10 * unet + vae
    assert unet_flops_per_row(m) == unet  # cached per model


def test_utilisation_and_cost_arithmetic():
    u = utilisation(images=100, seconds=10.0, flops_per_image=10**12, peak_tflops=100.0, price_per_hour=3.6)
    assert u["images_per_s_per_device"] == pytest.approx(10.0) and u["achieved_tflops"] == pytest.approx(10.0)
    assert u["mfu"] == pytest.approx(0.1) and u["usd_per_1000_images"] == pytest.approx(0.1)
    unknown = utilisation(images=100, seconds=10.0, flops_per_image=10**12, peak_tflops=None)
    assert unknown["mfu"] is None and unknown["usd_per_1000_images"] is None
    assert device_peak_tflops("cpu", "float32") is None and device_peak_tflops("cpu", "float32", override=2.5) == 2.5


@pytest.mark.parametrize("family", ["sd3", "flux", "pixart"])
def test_transformer_families_count_their_transformer_calls_and_one_decode_without_touching_the_rng(family):
    import torch

    from normguide.diffusion import load_pipeline
    from normguide.diffusion.flops import transformer_flops_per_step

    m = load_pipeline(f"demo:{family}")  # fresh: nothing counted yet
    state = torch.get_rng_state()
    guided, unguided = (transformer_flops_per_step(m, guidance_scale=g) for g in (7.5, 1.0))
    assert torch.equal(state, torch.get_rng_state())  # counting draws no random number
    assert flops_per_image(m, steps=3, guidance_scale=7.5) == 3 * guided + vae_decode_flops(m)  # Euler: a call a step
    # classifier-free guidance doubles the rows (SD3, PixArt); FLUX's guidance is an input: one row
    assert guided == (unguided if family == "flux" else 2 * unguided) and unguided > 0


def test_the_most_specific_device_name_wins_the_peak_lookup():
    from normguide.diffusion.flops import peak_for_name

    assert peak_for_name("NVIDIA H100 PCIe", "bfloat16")[0] == 756.0
    assert peak_for_name("NVIDIA H100 80GB HBM3", "bfloat16")[0] == 989.0
    assert peak_for_name("NVIDIA A100-SXM4-80GB", "tf32")[0] == 156.0
    assert peak_for_name("NVIDIA L40S", "float32")[0] == 91.6 and peak_for_name("NVIDIA L4", "float32")[0] == 30.3
    assert peak_for_name("Tesla T4", "bfloat16") == (None, "Tesla T4: no bfloat16 peak in PEAK_TFLOPS; set cost.peak_tflops")
    assert peak_for_name("Some GPU", "float16")[0] is None
