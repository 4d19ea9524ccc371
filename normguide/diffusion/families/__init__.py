"""Model families behind one interface (``base.Family``), one module each; the registry picks a
family from a pipeline's class name (``model_index.json``'s ``_class_name``).

Adding a family is one new module here that subclasses ``Family`` (or ``flow.FlowFamily``) and
calls ``register``, plus its import below.
"""

from normguide.diffusion.families.base import (
    Family,
    UnsupportedFeatureError,
    UnsupportedPipelineError,
    demo_names,
    family_names,
    for_class,
    for_model,
    for_name,
    supported_pipelines,
)

# isort: off
# Registration order is the order families are listed in (FAMILIES, errors, docs).
from normguide.diffusion.families import sd, sdxl, sd3, flux, pixart  # noqa: F401
# isort: on

__all__ = [
    "Family",
    "UnsupportedFeatureError",
    "UnsupportedPipelineError",
    "demo_names",
    "family_names",
    "for_class",
    "for_model",
    "for_name",
    "supported_pipelines",
]
