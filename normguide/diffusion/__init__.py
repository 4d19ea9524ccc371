"""The diffusion layer: model families behind one interface (``families``: SD 1.x/2.x, SDXL, SD3,
FLUX), loading, the built-in demo models, inverters (a registry), inversion and generation. Knows nothing of Prefect, storage or file formats beyond a pipeline directory."""

import logging as _logging


class _NoTorchvisionFallbackNotice(_logging.Filter):
    """Drop transformers' notice that CLIP/Siglip image processors fall back to PIL without
    torchvision: SD pipelines import those classes but normguide never uses them, so the notice
    only confuses users at every start."""

    def filter(self, record: _logging.LogRecord) -> bool:
        return "requires torchvision (not installed)" not in record.getMessage()


_logging.getLogger("transformers.utils.import_utils").addFilter(_NoTorchvisionFallbackNotice())

from normguide.diffusion.ddim import (
    PRECISION_FALLBACKS,
    GeneratedBatch,
    InversionResult,
    PrecisionError,
    decode_latents,
    encode_images,
    prepare_image,
    warm_up,
)
from normguide.diffusion.demo import DEMO_FAMILIES, DEMO_RESOLUTION, build_demo_pipeline
from normguide.diffusion.devices import device_lock, exclusive_device, resolve_device, resolve_dtype
from normguide.diffusion.families import UnsupportedFeatureError, UnsupportedPipelineError
from normguide.diffusion.inverters import INVERTER_NAMES, INVERTERS
from normguide.diffusion.loading import (
    FAMILIES,
    LoadedModel,
    ModelLoadError,
    clear_pipeline_cache,
    float32_twin,
    from_pipeline,
    get_pipeline,
    load_pipeline,
)
from normguide.diffusion.sampling import generate_images, invert_images, resolved_inverter

__all__ = [
    "DEMO_FAMILIES",
    "DEMO_RESOLUTION",
    "FAMILIES",
    "INVERTERS",
    "INVERTER_NAMES",
    "PRECISION_FALLBACKS",
    "GeneratedBatch",
    "InversionResult",
    "LoadedModel",
    "ModelLoadError",
    "PrecisionError",
    "UnsupportedFeatureError",
    "UnsupportedPipelineError",
    "build_demo_pipeline",
    "clear_pipeline_cache",
    "decode_latents",
    "device_lock",
    "encode_images",
    "exclusive_device",
    "float32_twin",
    "from_pipeline",
    "generate_images",
    "get_pipeline",
    "invert_images",
    "load_pipeline",
    "prepare_image",
    "resolve_device",
    "resolve_dtype",
    "resolved_inverter",
    "warm_up",
]
