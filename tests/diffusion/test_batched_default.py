"""The default mode is batched, as diffusers runs: at the same batch size normguide's generation and
inversion give bare diffusers' bytes (the plain ``StableDiffusionPipeline`` call and the
``DDIMInverseScheduler`` loop written as diffusers' docs do), on the shipped demo model."""

import torch

from normguide.diffusion import generate_images, get_pipeline, invert_images

PROMPT = "a handwritten digit three"


def test_default_generation_gives_bare_diffusers_bytes_at_the_same_batch_size():
    m = get_pipeline("demo")
    seeds = torch.randn(6, *m.seed_shape, generator=torch.Generator().manual_seed(21))
    ours = [im.tobytes() for b in generate_images(m, seeds, PROMPT, num_inference_steps=3, guidance_scale=3.0,
                                                   batch_size=3) for im in b]
    bare = []
    with torch.inference_mode():
        for part in seeds.split(3):  # the same batches, through the plain pipeline call
            out = m.pipe(prompt=[PROMPT] * part.shape[0], latents=part.clone(), num_inference_steps=3,
                         guidance_scale=3.0, output_type="pil").images
            bare += [im.tobytes() for im in out]
    assert ours == bare


def test_default_inversion_is_the_bare_diffusers_inverse_loop_at_the_same_batch_size():
    from diffusers import DDIMInverseScheduler

    m = get_pipeline("demo")
    seeds = torch.randn(3, *m.seed_shape, generator=torch.Generator().manual_seed(22))
    images = [im for b in generate_images(m, seeds, PROMPT, num_inference_steps=3, batch_size=3) for im in b]
    res = invert_images(m, images, PROMPT, num_inference_steps=4, batch_size=3, reconstruction=False)
    pipe = m.pipe
    inverse = DDIMInverseScheduler.from_config(pipe.scheduler.config)
    inverse.set_timesteps(4)
    with torch.inference_mode():
        x = pipe.image_processor.preprocess(images, height=m.resolution, width=m.resolution)
        z0 = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
        assert torch.allclose(z0, res.latents, atol=1e-5)  # same images; preprocessing arithmetic may differ
        # from normguide's z_0, so that the loops are compared exactly; in the contiguous layout that
        # normguide feeds its UNet on CPU (the VAE hands back channels_last strides here, whose
        # kernels round differently: a layout choice, not batching)
        z = res.latents.contiguous()
        cond, _ = pipe.encode_prompt(PROMPT, pipe.device, 3, False)  # one prompt, 3 images, as the pipeline
        for t in inverse.timesteps:  # guidance 1 (the inversion default): the conditional pass only
            z = inverse.step(pipe.unet(z, t, encoder_hidden_states=cond).sample, t, z).prev_sample
    assert torch.equal(z, res.seeds)
