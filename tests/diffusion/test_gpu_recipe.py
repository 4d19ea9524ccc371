"""The GPU recipe's switches (normguide.diffusion.gpu_recipe, RunConfig.gpu) do what they name, on
the tiny real SD-1 demo pipeline on CPU (half precision through ``from_pipeline``, which allows it
on CPU; compilation with Dynamo's 'eager' backend: tracing and guards, no C++ toolchain)."""

import copy

import pytest
import torch

from normguide.diffusion import build_demo_pipeline, decode_latents, float32_twin, from_pipeline, generate_images
from normguide.diffusion.families import for_model
from normguide.diffusion.gpu_recipe import GpuRecipe, has_compiled_child


@pytest.fixture(scope="module")
def sd1_pipe():
    pipe = build_demo_pipeline("sd1")
    assert pipe.vae.config.force_upcast  # as a real SD 1.5 VAE config has it (the config default)
    return pipe


def _pixel_diff(x, y) -> int:
    return int((torch.tensor(list(x.tobytes())) - torch.tensor(list(y.tobytes()))).abs().max())


def _dtype(module):
    return next(iter(module.parameters())).dtype


def test_vae_half_keeps_an_upcast_vae_decoder_in_float16_and_the_encoder_in_float32(sd1_pipe):
    default = from_pipeline(copy.deepcopy(sd1_pipe), model_id="t", revision="t", dtype=torch.float16)
    half = from_pipeline(copy.deepcopy(sd1_pipe), model_id="t", revision="t", dtype=torch.float16,
                         recipe=GpuRecipe(vae_half=True))
    assert _dtype(default.pipe.vae.decoder) == torch.float32  # force_upcast honoured by default
    assert _dtype(half.pipe.vae.decoder) == torch.float16  # as diffusers' StableDiffusionPipeline runs it
    assert _dtype(half.pipe.vae.encoder) == torch.float32  # inversion still encodes in float32
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    a, b = decode_latents(default, z), decode_latents(half, z)
    assert max(_pixel_diff(x, y) for x, y in zip(a, b)) <= 8  # fp16 rounding, not another image


def test_fuse_qkv_fuses_the_unets_attention_and_keeps_its_images(sd1_pipe):
    plain = from_pipeline(copy.deepcopy(sd1_pipe), model_id="t", revision="t")
    fused = from_pipeline(copy.deepcopy(sd1_pipe), model_id="t", revision="t", recipe=GpuRecipe(fuse_qkv=True))
    assert not any("Fused" in type(p).__name__ for p in plain.pipe.unet.attn_processors.values())
    assert all("Fused" in type(p).__name__ for p in fused.pipe.unet.attn_processors.values())
    seeds = torch.randn(2, *plain.seed_shape, generator=torch.Generator().manual_seed(1))
    kw = dict(num_inference_steps=2, batch_size=2, batch_invariant=False)
    ours = [im for b in generate_images(fused, seeds, "a cat", **kw) for im in b]
    theirs = [im for b in generate_images(plain, seeds, "a cat", **kw) for im in b]
    assert max(_pixel_diff(x, y) for x, y in zip(ours, theirs)) <= 2  # one GEMM instead of three: at most the last bits of a pixel


def test_compiled_vae_decoder_decodes_and_the_float32_twin_runs_uncompiled_on_its_own_copy(sd1_pipe):
    import torch._dynamo

    torch._dynamo.reset()
    m = from_pipeline(copy.deepcopy(sd1_pipe), model_id="t", revision="t", dtype=torch.float16, compile="eager",
                      recipe=GpuRecipe(compile_vae=True, vae_half=True))
    assert has_compiled_child(m.pipe.vae)
    assert for_model(m).denoiser(m.pipe) is m.pipe.unet  # the compiled UNet's wrapper, found without bool()
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    assert len(decode_latents(m, z)) == 1
    twin = float32_twin(m)
    assert not has_compiled_child(twin.pipe.vae) and twin.pipe.vae is not m.pipe.vae
    assert _dtype(twin.pipe.vae.decoder) == torch.float32 and _dtype(m.pipe.vae.decoder) == torch.float16
    assert has_compiled_child(m.pipe.vae)  # the original keeps its compiled decoder
    torch._dynamo.reset()


def test_run_config_gpu_section_is_off_by_default_outside_the_run_id_and_names_a_bad_mode():
    from pydantic import ValidationError

    from normguide.config import RunConfig, validation_line

    on = RunConfig.model_validate({"gpu": {"compile_mode": "max-autotune", "compile_vae": True, "fuse_qkv": True,
                                           "vae_half": True, "cudnn_benchmark": True, "tf32": True}})
    assert GpuRecipe(**RunConfig().gpu.model_dump()) == GpuRecipe()
    assert GpuRecipe(**on.gpu.model_dump()).key()  # the model cache tells the two apart
    assert on.content_dict() == RunConfig().content_dict()  # speed settings: same run id
    with pytest.raises(ValidationError) as err:
        RunConfig.model_validate({"gpu": {"compile_mode": "fastest"}})
    assert "gpu.compile_mode" in validation_line(err.value)
