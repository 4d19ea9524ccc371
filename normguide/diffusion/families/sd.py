"""Stable Diffusion 1.x / 2.x (ε and v prediction): ``StableDiffusionPipeline``.

DDIM (η = 0) with the checkpoint's own scheduler config, inverted by DDIM inversion
(``ddim.invert_images``) or its noise-regularised variant (``ddim-reg``); the code paths are
those of ``normguide.diffusion.ddim``, unchanged (the shipped digits demo keeps its bytes).
Seeds are used as z_T as given: DDIM's ``init_noise_sigma`` is 1.
"""

from __future__ import annotations

from normguide.diffusion.families.base import Family, register


class StableDiffusionFamily(Family):
    pipeline_classes = ("StableDiffusionPipeline",)
    names = ("sd1", "sd2", "sd2-v")
    demo_names = ("sd1", "sd2", "sd2-v")
    guidance = "cfg"
    inverters = ("ddim", "ddim-reg")
    default_inverter = "ddim"
    refinable = True
    sampler = "DDIM (eta 0)"

    def describe(self, pipe) -> str:
        from normguide.diffusion.loading import pipeline_family

        return pipeline_family(pipe)

    def prepare(self, pipe) -> None:
        from normguide.diffusion.loading import use_ddim

        use_ddim(pipe)

    def geometry(self, pipe):
        from normguide.diffusion.loading import pipeline_geometry

        return pipeline_geometry(pipe)

    def init_noise_sigma(self, model, num_inference_steps: int) -> float:
        return float(model.pipe.scheduler.init_noise_sigma)

    def invert(self, model, images, prompt, *, inverter=None, **kwargs):
        name = self.check_inverter(inverter)
        if name == "ddim-reg":
            from normguide.diffusion.regularised import invert_images_regularised

            return invert_images_regularised(model, images, prompt, **kwargs)
        from normguide.diffusion.ddim import invert_images

        return invert_images(model, images, prompt, **kwargs)

    def generate(self, model, seeds, prompt, **kwargs):
        from normguide.diffusion.ddim import generate_images

        return generate_images(model, seeds, prompt, **kwargs)

    def round_trip(self, model, images, prompt, *, inverter=None, num_inference_steps=50, guidance_scale=1.0):
        from normguide.diffusion.ddim import regenerate_latents

        inv = self.invert(model, images, prompt, inverter=inverter, num_inference_steps=num_inference_steps,
                          guidance_scale=guidance_scale, batch_size=len(images), reconstruction=False)
        again = regenerate_latents(model, inv.seeds, prompt, num_inference_steps=num_inference_steps,
                                   guidance_scale=guidance_scale)
        return inv.latents, inv.seeds, again

    def decode_u8(self, model, z):
        import numpy as np
        import torch

        from normguide.diffusion.ddim import decode_latents

        return torch.from_numpy(np.stack([np.asarray(im) for im in decode_latents(model, z.to(model.device))]))

    def build_demo(self, name: str):
        from normguide.diffusion.demo import build_demo_pipeline

        return build_demo_pipeline(name)


FAMILY = register(StableDiffusionFamily())
