"""Inversion and generation for any model family: the entry points the pipeline calls.

``invert_images`` / ``generate_images`` take and return what ``ddim.invert_images`` /
``ddim.generate_images`` do, for every family: the SD families run exactly that code (same
bytes), the flow-matching families their own (``families/flow.py``). ``inverter`` picks the
inverter (None: the family's default: ``ddim`` for SD, ``flow-euler`` for flow matching).
"""

from __future__ import annotations

from normguide.diffusion.families import for_model


def invert_images(model, images, prompt, *, inverter: str | None = None, **kwargs):
    """Images -> seeds with the model family's inverter (see ``ddim.invert_images`` for the
    keyword arguments and the result)."""
    return for_model(model).invert(model, images, prompt, inverter=inverter, **kwargs)


def generate_images(model, seeds, prompt, **kwargs):
    """Seeds -> images with the model family's sampler, in batches (see ``ddim.generate_images``)."""
    return for_model(model).generate(model, seeds, prompt, **kwargs)


def resolved_inverter(model, inverter: str | None = None) -> str:
    """The inverter a call with ``inverter`` runs on ``model`` (the default filled in); refused
    (``UnsupportedFeatureError``) when the family cannot run it."""
    return for_model(model).check_inverter(inverter)


def pack_seeds(model, seeds):
    """Seeds (N, C, h, w) -> the layout of the family's diffusers pipeline's ``latents=`` argument
    (packed for FLUX). A pipeline whose scheduler has ``init_noise_sigma`` != 1 (SDXL's Euler) then
    multiplies them by it itself; divide by it first to hand such a pipeline a unit-variance seed."""
    return for_model(model).pack(seeds, model)


def unpack_latents(model, latents):
    """Inverse of the packing in ``pack_seeds`` (no scaling)."""
    return for_model(model).unpack(latents, model)
