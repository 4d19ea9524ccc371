"""SeedSelect refinement (normguide.diffusion.refine) on the shipped demo model and its feature
model, and with a tiny CLIP built from a config (no download)."""

import pytest
import torch

from normguide.demo import digits as D
from normguide.demo.features import load_demo_features
from normguide.diffusion import get_pipeline
from normguide.diffusion.refine import (
    PRESETS,
    ClipImageFeatures,
    RefineSettings,
    check_refinable,
    reference_targets,
    refine_seeds,
)

#: Few steps keep each sampling pass cheap; the paper's loss and schedule otherwise.
FAST = RefineSettings(iterations=2, learning_rate=0.05, num_inference_steps=4, guidance_scale=3.0)


@pytest.fixture(scope="module")
def setup():
    model = get_pipeline("demo")
    features = load_demo_features()
    targets = reference_targets(model, D.reference_images(2, 5), features)
    return model, features, targets


def _seeds(model, n, seed=0):
    return torch.randn(n, *model.seed_shape, generator=torch.Generator().manual_seed(seed))


def test_two_iterations_lower_the_loss_of_a_fixed_seed(setup):
    model, features, targets = setup
    r = refine_seeds(model, _seeds(model, 1), D.prompt_for(2), features, targets, FAST)
    start = 10 * r.semantic_start[0] + r.appearance_start[0]
    end = 10 * r.semantic_end[0] + r.appearance_end[0]
    assert r.iterations == [2] and r.fallback == [False]
    assert end < start, (start, end)
    # the history's first and last entries are the start and end losses
    assert r.semantic_history[0, 0].item() == pytest.approx(r.semantic_start[0])
    assert r.semantic_history[0, 2].item() == pytest.approx(r.semantic_end[0])
    assert not torch.equal(r.seeds, _seeds(model, 1)) and torch.isfinite(r.seeds).all()


def test_a_batch_is_deterministic_and_each_seed_follows_its_own_path(setup):
    model, features, targets = setup
    seeds = _seeds(model, 2, seed=3)
    batched = refine_seeds(model, seeds, D.prompt_for(2), features, targets, FAST)
    again = refine_seeds(model, seeds, D.prompt_for(2), features, targets, FAST)
    alone = refine_seeds(model, seeds[1:], D.prompt_for(2), features, targets, FAST)
    assert torch.equal(batched.seeds, again.seeds)  # bit-identical on CPU
    # the loss is a sum of per-seed losses, AdamW is element-wise: seed 1's path is its own
    torch.testing.assert_close(batched.seeds[1:], alone.seeds, atol=1e-4, rtol=0)


@pytest.mark.parametrize("lr, why", [(1e3, "rose"), (1e30, "non-finite")])
def test_a_diverging_seed_falls_back_to_its_unrefined_seed(setup, lr, why):
    model, features, targets = setup
    seeds = _seeds(model, 1, seed=5)
    lines = []
    bad = RefineSettings(iterations=2, learning_rate=lr, lr_decay_at=None, num_inference_steps=4, guidance_scale=3.0)
    r = refine_seeds(model, seeds, D.prompt_for(2), features, targets, bad, log=lines.append)
    assert r.fallback == [True]
    assert torch.equal(r.seeds, seeds)  # never a NaN seed: the planned one
    assert r.semantic_end == r.semantic_start and all(x == x for x in r.semantic_end)
    assert len(lines) == 1 and "seed 0 diverged" in lines[0] and why in lines[0]


def test_stopping_rule_stops_a_seed_at_the_target_loss(setup):
    model, features, targets = setup
    r = refine_seeds(model, _seeds(model, 1), D.prompt_for(2), features, targets,
                     RefineSettings(iterations=5, num_inference_steps=4, guidance_scale=3.0, stop_below=1e9))
    assert r.iterations == [0] and r.fallback == [False]  # the start already meets it: no step taken
    assert torch.equal(r.seeds, _seeds(model, 1))


def test_presets_are_the_papers():
    assert (PRESETS["nao"].learning_rate, PRESETS["nao"].iterations, PRESETS["nao"].guidance_scale) == (0.05, 5, 1.0)
    assert (PRESETS["random"].learning_rate, PRESETS["random"].iterations, PRESETS["random"].guidance_scale) == (0.1, 30, 7.5)
    for p in PRESETS.values():
        assert (p.lr_decay_at, p.lr_decay_factor, p.semantic_weight, p.appearance_weight) == (3, 0.1, 10.0, 1.0)
        assert p.step_weights == (0.05, 0.25, 0.7) and p.num_inference_steps == 20


def test_bad_settings_and_families_are_named():
    with pytest.raises(ValueError, match=r"refine\.num_inference_steps must be at least"):
        RefineSettings(num_inference_steps=2).check()
    with pytest.raises(ValueError, match=r"refine\.guidance_scale"):
        RefineSettings(guidance_scale=0.5).check()
    with pytest.raises(ValueError, match=r"refine\.enabled: .*'flux' family cannot"):
        check_refinable("flux", field="refine.enabled")


def test_clip_features_from_a_tiny_clip_built_from_config(setup):
    from transformers import CLIPConfig, CLIPModel

    model, _, _ = setup
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(
        text_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                     "vocab_size": 99, "projection_dim": 16},
        vision_config={"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2,
                       "image_size": 30, "patch_size": 6, "projection_dim": 16},
        projection_dim=16)).eval()
    phi = ClipImageFeatures(clip, [0.48, 0.46, 0.41], [0.27, 0.26, 0.28], 30)
    targets = reference_targets(model, D.reference_images(5, 3), phi)
    assert targets.features.shape == (16,) and targets.features.norm().item() == pytest.approx(1.0)
    flags = [p.requires_grad for p in model.pipe.unet.parameters()]
    r = refine_seeds(model, _seeds(model, 1), D.prompt_for(5), phi, targets,
                     RefineSettings(iterations=1, num_inference_steps=3, guidance_scale=1.0))
    assert r.fallback == [False] and r.iterations == [1]
    assert all(torch.isfinite(torch.tensor([r.semantic_start[0], r.semantic_end[0]])))
    assert not torch.equal(r.seeds, _seeds(model, 1))
    assert [p.requires_grad for p in model.pipe.unet.parameters()] == flags  # the model's flags are restored
