"""What every model family provides (``Family``), and the registry that picks one from a
pipeline's class name (a checkpoint's ``model_index.json`` ``_class_name``).

A family is one module in this package holding one ``Family`` subclass instance, registered with
``register``. It says, for its pipelines:

- ``pipeline_classes``: the diffusers pipeline classes it serves;
- ``names``: the family names it reports (``LoadedModel.family``), ``describe(pipe)`` picks one;
- ``geometry(pipe)``: image side in px and the seed shape ``(C, h, w)``; seeds are always stored
  *unpacked*, unit-variance Gaussian-shaped latents;
- ``pack``/``unpack``: the layout the pipeline's ``latents=`` argument takes (identity for all but
  FLUX, which takes 2x2-patch tokens); norms are invariant to packing;
- ``init_noise_sigma(model, steps)``: the factor the pipeline multiplies user latents by (SD: the
  scheduler's ``init_noise_sigma``; flow matching: 1);
- ``guidance``: ``"cfg"`` (classifier-free guidance, two passes), ``"embedded"`` (guidance-distilled:
  the scale is an input of the transformer, one pass) or ``"none"`` (ignored);
- ``inverters``: the inverter names it can run, ``default_inverter`` the one used when the run
  config names none;
- ``prepare(pipe)``: the scheduler and settings inversion and generation need (called once on load);
- ``invert(model, images, prompt, inverter=..., ...)`` and ``generate(model, seeds, prompt, ...)``:
  the same signatures and results as ``ddim.invert_images`` / ``ddim.generate_images``;
- ``build_demo()``: the tiny random-weight offline build ``demo:<name>`` (or None).
"""

from __future__ import annotations

from typing import ClassVar

from normguide.errors import InputError


class UnsupportedPipelineError(InputError):
    """A checkpoint whose pipeline class no family serves; names the class and the families."""


class UnsupportedFeatureError(InputError):
    """A family asked for something it does not have (an inverter, refinement); names both."""


class Family:
    """Base of every model family (see the module docstring); subclasses set the class attributes
    and implement the methods their pipelines need."""

    pipeline_classes: ClassVar[tuple[str, ...]] = ()
    names: ClassVar[tuple[str, ...]] = ()
    demo_names: ClassVar[tuple[str, ...]] = ()
    guidance: ClassVar[str] = "cfg"
    inverters: ClassVar[tuple[str, ...]] = ()
    default_inverter: ClassVar[str] = ""
    refinable: ClassVar[bool] = False
    #: what a manifest/doc says about how it samples, e.g. "DDIM (eta 0)" or "flow matching, Euler"
    sampler: ClassVar[str] = ""

    def describe(self, pipe) -> str:
        return self.names[0]

    def prepare(self, pipe) -> None:  # pragma: no cover - every family overrides
        raise NotImplementedError

    def geometry(self, pipe) -> tuple[int, tuple[int, int, int]]:  # pragma: no cover
        raise NotImplementedError

    def denoiser(self, pipe):
        """The module that runs once per step (UNet or transformer): precision, memory format, compile."""
        unet = getattr(pipe, "unet", None)  # not `or`: a torch.compile wrapper refuses bool() (its len())
        return unet if unet is not None else pipe.transformer

    def set_denoiser(self, pipe, module) -> None:
        if getattr(pipe, "unet", None) is not None:
            pipe.unet = module
        else:
            pipe.transformer = module

    def pack(self, latents, model):
        """(B, C, h, w) seeds -> the layout of the pipeline's ``latents=`` argument (identity here)."""
        return latents

    def unpack(self, latents, model):
        """Inverse of ``pack``."""
        return latents

    def init_noise_sigma(self, model, num_inference_steps: int) -> float:
        """What the pipeline multiplies user ``latents`` by before its first step."""
        return 1.0

    def check_inverter(self, inverter: str | None, *, field: str = "inversion.inverter") -> str:
        """The inverter to use (``default_inverter`` for None); UnsupportedFeatureError naming the
        family and the inverter when the family cannot run it."""
        name = self.default_inverter if inverter is None else inverter
        if name not in self.inverters:
            from normguide.diffusion.inverters import INVERTERS

            what = "an unknown inverter" if name not in INVERTERS else "an inverter this family cannot run"
            raise UnsupportedFeatureError(
                f"{field}: {name!r} is {what} for the {'/'.join(self.names)} family; "
                f"it can run {', '.join(self.inverters)}"
            )
        return name

    def invert(self, model, images, prompt, *, inverter=None, **kwargs):  # pragma: no cover
        raise NotImplementedError

    def generate(self, model, seeds, prompt, **kwargs):  # pragma: no cover
        raise NotImplementedError

    def round_trip(self, model, images, prompt, *, inverter=None, num_inference_steps=50, guidance_scale=1.0):
        """(z_0, seeds, z_0 regenerated) for images: inverted with ``inverter``, then carried back
        with the inverter's own forward solver over the same grid; float32 on CPU."""
        raise NotImplementedError  # pragma: no cover

    def decode_u8(self, model, z):
        """(B, R, R, 3) uint8 images of latents z (the bytes the pipeline's postprocess gives)."""
        raise NotImplementedError  # pragma: no cover

    def build_demo(self, name: str):
        return None


_BY_CLASS: dict[str, Family] = {}
_BY_NAME: dict[str, Family] = {}
_ORDER: list[Family] = []


def register(family: Family) -> Family:
    """Add a family (its module calls this once at import)."""
    for cls in family.pipeline_classes:
        _BY_CLASS[cls] = family
    for name in family.names:
        _BY_NAME[name] = family
    _ORDER.append(family)
    return family


def all_families() -> tuple[Family, ...]:
    """Every registered family, in registration order."""
    return tuple(_ORDER)


def family_names() -> tuple[str, ...]:
    return tuple(name for fam in _ORDER for name in fam.names)


def supported_pipelines() -> tuple[str, ...]:
    return tuple(cls for fam in _ORDER for cls in fam.pipeline_classes)


def demo_names() -> tuple[str, ...]:
    return tuple(name for fam in _ORDER for name in fam.demo_names)


def for_class(class_name, *, where: str = "model") -> Family:
    """The family serving a pipeline class; UnsupportedPipelineError naming the class and every
    supported family (with its pipeline classes) otherwise."""
    family = _BY_CLASS.get(class_name) if isinstance(class_name, str) else None
    if family is None:
        listed = "; ".join(f"{'/'.join(f.names)} ({', '.join(f.pipeline_classes)})" for f in _ORDER)
        raise UnsupportedPipelineError(
            f"{where} holds a {class_name!r} pipeline, which normguide does not support; supported families: {listed}"
        )
    return family


def for_name(name: str) -> Family:
    """The family of a family name (``LoadedModel.family``); KeyError if unknown."""
    return _BY_NAME[name]


def for_model(model) -> Family:
    """The family of a ``LoadedModel``."""
    return _BY_NAME[model.family]
