"""SDXL: ``StableDiffusionXLPipeline`` (two CLIP text encoders, pooled text and size ids).

Sampled and inverted by the same DDIM code as the SD family (``ddim.py`` handles SDXL's extra
conditioning). SDXL checkpoints ship an Euler scheduler (``init_noise_sigma`` ≈ 14.6); loading
replaces it by DDIM built from its config, whose ``init_noise_sigma`` is 1, so seeds stay
unit-variance and are used as given. A seed handed to the plain pipeline with its own Euler
scheduler must be multiplied by that scheduler's ``init_noise_sigma`` (``init_noise_sigma``).
"""

from __future__ import annotations

from normguide.diffusion.families.base import register
from normguide.diffusion.families.sd import StableDiffusionFamily


class StableDiffusionXLFamily(StableDiffusionFamily):
    pipeline_classes = ("StableDiffusionXLPipeline",)
    names = ("sdxl",)
    demo_names = ("sdxl",)

    def describe(self, pipe) -> str:
        return "sdxl"


FAMILY = register(StableDiffusionXLFamily())
