"""The diffusion layer: loading SD-family pipelines, the built-in demo model, DDIM inversion and
generation. Knows nothing of Prefect, storage or file formats beyond a pipeline directory."""

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
    generate_images,
    invert_images,
    prepare_image,
    warm_up,
)
from normguide.diffusion.demo import DEMO_FAMILIES, DEMO_RESOLUTION, build_demo_pipeline
from normguide.diffusion.devices import device_lock, exclusive_device, resolve_device, resolve_dtype
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

__all__ = [
    "PRECISION_FALLBACKS",
    "DEMO_FAMILIES",
    "DEMO_RESOLUTION",
    "FAMILIES",
    "GeneratedBatch",
    "InversionResult",
    "PrecisionError",
    "LoadedModel",
    "ModelLoadError",
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
    "warm_up",
]
