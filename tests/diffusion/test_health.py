"""Seed health records, the round trip of any family and inverter, and the round-trip gate."""

import math

import pytest
import torch

from normguide.diffusion import get_pipeline
from normguide.diffusion.health import HEALTH_KEYS, autocorrelation, psnr, round_trip, round_trip_gate, seed_health


def test_a_gaussian_seed_looks_healthy_and_a_smooth_one_does_not():
    g = torch.Generator().manual_seed(0)
    gauss = torch.randn(64, 4, 16, 16, generator=g)
    rec = seed_health(gauss)
    assert set(rec[0]) == set(HEALTH_KEYS) and rec[0]["round_trip_error"] is None
    z = torch.tensor([r["norm_zscore"] for r in rec])
    assert abs(z.mean()) < 0.4 and 0.6 < z.std() < 1.5
    assert abs(sum(r["channel_mean"][0] for r in rec) / 64) < 0.05
    assert abs(sum(r["channel_var"][0] for r in rec) / 64 - 1) < 0.05
    ac = autocorrelation(gauss)
    assert ac.shape == (64, 4)  # scales 1, 2, 4, 8 (sides 16, 8, 4, 2)
    assert ac.mean(0).abs().max() < 0.05
    smooth = torch.nn.functional.interpolate(torch.randn(4, 4, 4, 4, generator=g), size=(16, 16), mode="bilinear")
    assert min(r["autocorr_max"] for r in seed_health(smooth)) > 0.5


def test_the_norm_zscore_is_the_chi_laws_and_errors_are_carried():
    seeds = torch.zeros(2, 4, 8, 8)
    seeds[0].fill_(1.0)  # |z| = 16 = sqrt(d), d = 256: z ≈ +0.7
    rec = seed_health(seeds + 0.0, [0.1, 0.2])
    assert rec[0]["norm"] == pytest.approx(16.0) and 0 < rec[0]["norm_zscore"] < 1.5
    assert rec[1]["norm_zscore"] < -20  # the zero seed is far off the shell
    assert [r["round_trip_error"] for r in rec] == [0.1, 0.2]
    with pytest.raises(ValueError, match="2 values for 1 seeds"):
        seed_health(seeds[:1], [0.1, 0.2])


def test_psnr_and_the_gate():
    a = torch.zeros(2, 4, 4, 3, dtype=torch.uint8)
    b = a.clone()
    b[1, 0, 0, 0] = 255
    assert psnr(a, b)[0] == math.inf and psnr(a, b)[1] == pytest.approx(10 * math.log10(255**2 * 48 / 255**2))
    gate = round_trip_gate([0.01, 0.5, float("nan"), 0.02], 0.1, needed=3)
    assert gate.kept == [0, 3] and gate.dropped == [1, 2] and not gate.enough
    assert "2 reference(s) left out" in gate.message("alpha") and "the concept fails" in gate.message("alpha")
    assert round_trip_gate([0.01], 0.1).enough
    with pytest.raises(ValueError, match="bound"):
        round_trip_gate([0.1], 0.0)


@pytest.mark.parametrize("spec,inverter", [("demo:sd1", "ddim"), ("demo:sd1", "ddim-reg"), ("demo:sd3", "flow-fireflow")])
def test_the_round_trip_of_any_family_matches_its_inversions_reconstruction(spec, inverter):
    from normguide.diffusion import invert_images
    from tests.diffusion.conftest import make_images

    m = get_pipeline(spec)
    images = make_images(2)
    rt = round_trip(m, images, "a photo", inverter=inverter, num_inference_steps=2)
    inv = invert_images(m, images, "a photo", inverter=inverter, num_inference_steps=2, reconstruction=True)
    assert torch.equal(rt.seeds, inv.seeds)
    assert rt.latent_rmse == pytest.approx(inv.reconstruction_error, rel=1e-4, abs=1e-7)
    assert rt.model_calls == (3 if inverter == "flow-fireflow" else 2) and len(rt.psnr) == 2


def test_regularised_ddim_pushes_inverted_seeds_toward_gaussian_statistics():
    """pix2pix-zero's regulariser on the sd2-v demo (whose plain DDIM seeds are strongly
    auto-correlated): lower auto-correlation, deterministic, at a measured round-trip cost."""
    from tests.diffusion.conftest import make_images

    m = get_pipeline("demo:sd2-v")
    images = make_images(2)
    plain = round_trip(m, images, "a photo", inverter="ddim", num_inference_steps=4)
    reg = round_trip(m, images, "a photo", inverter="ddim-reg", num_inference_steps=4)
    again = round_trip(m, images, "a photo", inverter="ddim-reg", num_inference_steps=4)
    assert torch.equal(reg.seeds, again.seeds)
    ac = lambda rt: max(r["autocorr_max"] for r in seed_health(rt.seeds))
    assert ac(reg) < ac(plain) / 2
