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

import importlib as _importlib

#: public names and the module each lives in: imported on first use, so that importing one
#: submodule (``normguide.diffusion.inverters``: the config validates names against it) does
#: not load torch and diffusers
_EXPORTS = {
    "PRECISION_FALLBACKS": "ddim",
    "GeneratedBatch": "ddim",
    "InversionResult": "ddim",
    "PrecisionError": "ddim",
    "decode_latents": "ddim",
    "encode_images": "ddim",
    "prepare_image": "ddim",
    "warm_up": "ddim",
    "DEMO_FAMILIES": "demo",
    "DEMO_RESOLUTION": "demo",
    "build_demo_pipeline": "demo",
    "device_lock": "devices",
    "exclusive_device": "devices",
    "resolve_device": "devices",
    "resolve_dtype": "devices",
    "UnsupportedFeatureError": "families",
    "UnsupportedPipelineError": "families",
    "INVERTER_NAMES": "inverters",
    "INVERTERS": "inverters",
    "GpuRecipe": "gpu_recipe",
    "FAMILIES": "loading",
    "LoadedModel": "loading",
    "ModelLoadError": "loading",
    "clear_pipeline_cache": "loading",
    "float32_twin": "loading",
    "from_pipeline": "loading",
    "get_pipeline": "loading",
    "load_pipeline": "loading",
    "generate_images": "sampling",
    "invert_images": "sampling",
    "resolved_inverter": "sampling",
}


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(_importlib.import_module(f"normguide.diffusion.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'normguide.diffusion' has no attribute {name!r}")


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
