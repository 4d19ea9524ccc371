"""The GPU recipe's switches (docs/gpu.md): each off by default, each a documented speed setting.

``GpuRecipe`` is what ``from_pipeline`` / ``get_pipeline`` take; ``RunConfig.gpu`` (a config
section) holds the same fields. None of them is on unless asked for, because each can change the
last bits of an image (TF32 and fp16 round differently, cuDNN autotuning and fused projections
pick other kernels, compiled kernels fuse differently); like ``compile``, they are not part of
the run id.

- ``compile_mode``: ``torch.compile``'s mode for the UNet/transformer when ``compile`` is on:
  ``default``, ``reduce-overhead`` (CUDA graphs: less launch overhead at small batches),
  ``max-autotune`` (Triton GEMM/conv autotuning and CUDA graphs; long first compile) or
  ``max-autotune-no-cudagraphs``.
- ``compile_vae``: also compile the VAE decoder (same backend and mode).
- ``fuse_qkv``: fuse the attention blocks' query/key/value projections into one matmul
  (diffusers' ``fuse_qkv_projections`` on the UNet/transformer).
- ``vae_half``: in float16, keep the VAE decoder in float16 even where the checkpoint's config
  sets ``force_upcast`` (SD 1.x's does, by the config default), as diffusers'
  ``StableDiffusionPipeline`` runs it; an image whose decode overflows is retried in float32 per
  sample (``ddim``'s precision fallback).
- ``cudnn_benchmark``: ``torch.backends.cudnn.benchmark = True`` (cuDNN times its convolution
  algorithms per input shape and keeps the fastest).
- ``tf32``: ``torch.set_float32_matmul_precision("high")``: float32 matmuls on TF32 tensor cores
  (cuDNN convolutions already use TF32 by PyTorch's default).

The last two are process-wide PyTorch settings: they are switched on (never off) when a model is
loaded on CUDA with them set, and stay on for the process.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

#: ``torch.compile`` modes the recipe accepts.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class GpuRecipe:
    """The recipe's switches (module docstring); the defaults are PyTorch's and diffusers' own."""

    compile_mode: str = "default"
    compile_vae: bool = False
    fuse_qkv: bool = False
    vae_half: bool = False
    cudnn_benchmark: bool = False
    tf32: bool = False

    def __post_init__(self) -> None:
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"gpu.compile_mode must be one of {list(COMPILE_MODES)}, got {self.compile_mode!r}")

    def key(self) -> str:
        """A stable text form for caches: empty for the default recipe."""
        return ",".join(f"{k}={v}" for k, v in asdict(self).items() if v != getattr(DEFAULT_RECIPE, k, v))


DEFAULT_RECIPE = GpuRecipe()


def apply_process_flags(recipe: GpuRecipe, device: torch.device) -> None:
    """Switch on the recipe's process-wide PyTorch settings for a CUDA device (never off)."""
    if device.type != "cuda":
        return
    if recipe.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True
    if recipe.tf32:
        torch.set_float32_matmul_precision("high")


def compile_kwargs(recipe: GpuRecipe, backend: str) -> dict:
    """``torch.compile`` keyword arguments: fixed shapes, the backend, and the mode unless default."""
    kwargs: dict = {"backend": backend, "dynamic": False}
    if recipe.compile_mode != "default":
        kwargs["mode"] = recipe.compile_mode
    return kwargs


def fuse_qkv(denoiser: torch.nn.Module) -> None:
    """Fuse the denoiser's attention projections in place (diffusers' ``fuse_qkv_projections``)."""
    fuse = getattr(denoiser, "fuse_qkv_projections", None)
    if fuse is None:
        raise ValueError(f"gpu.fuse_qkv: {type(denoiser).__name__} has no fused-projection support in this "
                         "diffusers version; turn gpu.fuse_qkv off")
    fuse()


def uncompiled_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``module`` with every ``torch.compile`` wrapper among its submodules replaced
    by the module it wraps (the float32 twin must run eagerly, on its own weights)."""
    import copy

    from torch._dynamo.eval_frame import OptimizedModule

    out = copy.deepcopy(module)
    for sub in list(out.modules()):
        for name, child in list(sub.named_children()):
            if isinstance(child, OptimizedModule):
                setattr(sub, name, child._orig_mod)
    return out


def has_compiled_child(module: torch.nn.Module) -> bool:
    from torch._dynamo.eval_frame import OptimizedModule

    return any(isinstance(m, OptimizedModule) for m in module.modules())
