"""The one place that turns a model spec into a ready pipeline: ``load_pipeline`` / ``get_pipeline``.

A model spec is one of
- ``"demo"``: the shipped trained demo, a small Stable-Diffusion-architecture model trained on
  scikit-learn's handwritten digits (32 x 32 px, prompts "a handwritten digit seven"; see
  ``normguide.demo``). Its weights ship inside the package (``normguide/demo/weights/pipeline``) and
  load through the same ``from_pretrained`` path as any local pipeline directory;
- ``"demo:<family>"`` (``sd1``, ``sd2``, ``sd2-v``, ``sdxl``, ``sd3``, ``flux``): a tiny pipeline of
  that family with random weights, built in memory and offline (``demo.py``; the flow-matching ones
  in their family's module, ``families/``): its images are noise; it serves structural tests;
- an existing local directory written by ``save_pretrained`` (``model_index.json`` at its root);
- a Hugging Face Hub id (``"org/name"``), loaded with ``from_pretrained`` where the network (or the
  local HF cache) allows.

The model family is chosen from the pipeline's class (``model_index.json``'s ``_class_name``;
``families.for_class``): an unsupported class is one error naming it and the supported families.
Each family prepares its pipeline: the SD families get a ``DDIMScheduler`` built from their own
scheduler config (DDIM with eta = 0 is what DDIM inversion inverts, so generation from inverted
seeds must use it too); the flow-matching families keep their ``FlowMatchEulerDiscreteScheduler``.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import importlib.util
import json
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from normguide.diffusion.demo import DEMO_REVISION_FORMAT
from normguide.diffusion.devices import resolve_device, resolve_dtype
from normguide.diffusion.families import demo_names, family_names, for_class, for_name, supported_pipelines
from normguide.diffusion.gpu_recipe import (DEFAULT_RECIPE, GpuRecipe, apply_process_flags, compile_kwargs, fuse_qkv,
                                           has_compiled_child, uncompiled_copy)
from normguide.errors import InputError

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline

#: Every family name a loaded model may report (``normguide.diffusion.families``), in registry order.
FAMILIES: tuple[str, ...] = family_names()
#: The SD-architecture families (UNet, DDIM) among them.
SD_FAMILIES: tuple[str, ...] = ("sd1", "sd2", "sd2-v", "sdxl")
SUPPORTED_PIPELINES: tuple[str, ...] = supported_pipelines()

# Files whose bytes are hashed into a local checkpoint's revision; weights enter by name and size only
# (hashing gigabytes on every load would cost more than the load).
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack", ".onnx", ".gguf")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")

#: ``LoadedModel.note`` of the trained ``"demo"`` and of the random ``"demo:<family>"`` builds.
TRAINED_DEMO_NOTE = "a small digits model trained on scikit-learn's handwritten digits (32×32 px), not a photo model"
RANDOM_DEMO_NOTE = "random weights: its images are noise"
TRAINED_DEMO_REVISION_PREFIX = "demo-digits-"


@dataclass(frozen=True)
class LoadedModel:
    """A pipeline ready for inversion and generation, with what a manifest needs to say about it.

    Attributes:
        pipe: a pipeline of a supported family (``families``): ``StableDiffusionPipeline`` /
            ``StableDiffusionXLPipeline`` (scheduler: ``DDIMScheduler``), ``StableDiffusion3Pipeline``
            / ``FluxPipeline`` (``FlowMatchEulerDiscreteScheduler``). Treat it as read-only: it is shared through ``get_pipeline``.
        model_id: ``"demo"`` / ``"demo:<family>"``, the absolute local path, or the hub id.
        revision: ``"demo"``: ``"demo-digits-"`` + 16 hex digits of a sha256 over every file of the
            shipped pipeline, bytes included (changes whenever the weights do); ``"demo:<family>"``:
            ``"demo-<family>-v1"``; local directory: 16 hex digits of a sha256 over its configs and
            weight file names/sizes; hub: the snapshot's commit hash (``"unknown"`` if not found in the
            cache).
        family: ``"sd1"``, ``"sd2"``, ``"sd2-v"`` (v-prediction), ``"sdxl"``, ``"sd3"`` or ``"flux"``
            (the trained demo is ``"sd1"``-shaped); ``families.for_name`` gives its interface.
        is_demo: whether this is a built-in model (``"demo"`` or ``"demo:<family>"``); ``note`` says
            which kind.
        note: what the model is, for people reading a CLI line, run.json or a manifest:
            ``TRAINED_DEMO_NOTE`` for ``"demo"``, ``RANDOM_DEMO_NOTE`` for ``"demo:<family>"``, None
            for any other checkpoint.
        resolution: side in pixels of the square images the model generates and inverts.
        seed_shape: latent shape ``(C, h, w)``; a seed is one such tensor, ``d = C*h*w``, stored
            unpacked (FLUX packs it for its transformer: ``families.flux``).
        device, dtype: where and in what precision the model runs (seeds are always float32).
        scheduler: class name of the sampling scheduler (``"DDIMScheduler"``,
            ``"FlowMatchEulerDiscreteScheduler"``).
        compiled: whether the UNet is wrapped by ``torch.compile`` (fixed shapes: ``ddim`` pads the
            last batch rather than recompiling).

    Precision (``dtype`` is the UNet's): in float16 a VAE whose config sets ``force_upcast`` (SD's,
    SDXL's) runs in float32, as the diffusers pipelines do; any other VAE keeps its decoder in
    float16 but its encoder in float32 (the SDXL encoder overflows in fp16 even where the decoder is
    fixed, diffusers #9844; it runs once per reference image, so the cost is small). bfloat16 has
    float32's range: every component stays in bfloat16. Text encoders run in ``dtype`` (a prompt is
    encoded once per call). Whatever still fails is caught per sample by ``ddim`` and retried on
    ``float32_twin``.
    """

    pipe: DiffusionPipeline
    model_id: str
    revision: str
    family: str
    is_demo: bool
    resolution: int
    seed_shape: tuple[int, int, int]
    device: torch.device
    dtype: torch.dtype
    scheduler: str
    note: str | None = None
    compiled: bool = False
    _twins: dict = field(default_factory=dict, repr=False, compare=False)

    @property
    def d(self) -> int:
        """Seed dimension ``C*h*w`` (e.g. 16384 for SD 1.x at 512 px, 256 for the demo)."""
        c, h, w = self.seed_shape
        return c * h * w


class ModelLoadError(InputError):
    """A model spec that cannot be loaded; the message names the spec and what was wrong."""


# 1. Scheduler ------------------------------------------------------------------------------------


def ddim_scheduler_config(config) -> dict:
    """The DDIM config for a pipeline whose scheduler config is ``config`` (any SD scheduler).

    Values the checkpoint sets are kept. Two are filled where a non-DDIM config (e.g. SDXL's Euler)
    lacks them, because DDIMScheduler's own defaults are wrong for latent diffusion:
    ``clip_sample=False`` (clipping x̂_0 to [-1, 1] would cut latents, which range beyond it) and
    ``set_alpha_to_one=False`` (SD's convention). ``timestep_spacing="linspace"`` becomes
    ``"leading"``: DDIMInverseScheduler has no linspace grid, and the forward and inverse grids must
    be the same set of timesteps.
    """
    cfg = dict(config)
    cfg.setdefault("clip_sample", False)
    cfg.setdefault("set_alpha_to_one", False)
    if cfg.get("timestep_spacing", "leading") not in ("leading", "trailing"):
        cfg["timestep_spacing"] = "leading"
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def use_ddim(pipe) -> None:
    """Replace an SD-family pipeline's scheduler by DDIM built from its config (``ddim_scheduler_config``)."""
    from diffusers import DDIMScheduler

    pipe.scheduler = DDIMScheduler.from_config(ddim_scheduler_config(pipe.scheduler.config))


# 2. Describing a pipeline -----------------------------------------------------------------------


def pipeline_family(pipe) -> str:
    """``sdxl`` for an SDXL pipeline; else ``sd2-v`` / ``sd2`` / ``sd1`` from the UNet and scheduler.

    SD 2.x UNets use linear projections in their transformer blocks (SD 1.x use 1x1 convs) and a
    1024-wide text encoder; ``v_prediction`` marks the 768 px v-models.
    """
    if type(pipe).__name__ == "StableDiffusionXLPipeline":
        return "sdxl"
    unet_cfg = pipe.unet.config
    is_v = pipe.scheduler.config.get("prediction_type", "epsilon") == "v_prediction"
    is_sd2 = bool(unet_cfg.get("use_linear_projection", False)) or unet_cfg.get("cross_attention_dim") == 1024
    if is_v:
        return "sd2-v"
    return "sd2" if is_sd2 else "sd1"


def pipeline_geometry(pipe) -> tuple[int, tuple[int, int, int]]:
    """(resolution in px, seed shape (C, h, w)): the UNet's native sample size times the VAE factor."""
    vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
    side = int(pipe.unet.config.sample_size)
    return side * vae_scale, (int(pipe.unet.config.in_channels), side, side)


def local_revision(path: Path) -> str:
    """16 hex digits of sha256 over a pipeline directory: config/tokenizer files by content, weight
    files by relative name and size. Cheap and deterministic; hidden files/dirs are skipped."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(rel.as_posix().encode() + b"\0")
        if file.suffix in _WEIGHT_SUFFIXES:
            digest.update(str(file.stat().st_size).encode())
        else:
            digest.update(file.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def content_revision(path: Path) -> str:
    """16 hex digits of sha256 over every (non-hidden) file under ``path``: relative name and bytes.
    For small directories only (the shipped demo: ~7 MB, a few milliseconds)."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = file.relative_to(path)
        if any(part.startswith(".") for part in rel.parts):
            continue
        digest.update(rel.as_posix().encode() + b"\0" + file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


#: The shipped trained demo pipeline: package data of ``normguide.demo`` (its PIPELINE_DIR), named
#: here by path so the loader does not import the package that trains and judges with it (that
#: package sits above this one: its classifier and training script use the diffusion code).
TRAINED_DEMO_DIR = Path(__file__).resolve().parents[1] / "demo" / "weights" / "pipeline"


def trained_demo_dir() -> Path:
    """Where the shipped trained demo pipeline lives (inside the installed package)."""
    return TRAINED_DEMO_DIR


def _hub_revision(repo_id: str) -> str:
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(repo_id, "model_index.json")
    except Exception:  # noqa: BLE001 - the revision is informative, never a reason to fail
        return "unknown"
    if isinstance(cached, str) and "/snapshots/" in cached:
        return cached.split("/snapshots/")[1].split("/")[0]
    return "unknown"


# 3. Loading -------------------------------------------------------------------------------------


def _check_pipeline_dir(path: Path) -> str:
    """The pipeline class named in ``path/model_index.json``; ValueError if it is not SD-family."""
    index = path / "model_index.json"
    if not index.is_file():
        raise ModelLoadError(f"model directory {str(path)!r} is not a diffusers pipeline: no model_index.json")
    try:
        class_name = json.loads(index.read_text(encoding="utf-8")).get("_class_name")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError) as err:
        raise ModelLoadError(f"model directory {str(path)!r}: model_index.json is not valid JSON ({err})") from err
    for_class(class_name, where=f"model directory {str(path)!r}")  # one error naming the class and the families
    return class_name


_QUIET_GUARD = threading.Lock()
_QUIET_STATE: dict = {"depth": 0, "saved": None}


@contextlib.contextmanager
def _no_progress_bars():
    """diffusers' and transformers' loading progress bars off while inside (nested and threaded
    uses counted; the caller's settings restored when the last one leaves): a CLI run should not
    print "Loading pipeline components..." bars for a model that loads in a fraction of a second."""
    from diffusers.utils import logging as d_logging
    from transformers.utils import logging as t_logging

    with _QUIET_GUARD:
        if _QUIET_STATE["depth"] == 0:
            _QUIET_STATE["saved"] = (d_logging.is_progress_bar_enabled(), t_logging.is_progress_bar_enabled())
            d_logging.disable_progress_bar()
            t_logging.disable_progress_bar()
        _QUIET_STATE["depth"] += 1
    try:
        yield
    finally:
        with _QUIET_GUARD:
            _QUIET_STATE["depth"] -= 1
            if _QUIET_STATE["depth"] == 0:
                d_on, t_on = _QUIET_STATE["saved"]
                if d_on:
                    d_logging.enable_progress_bar()
                if t_on:
                    t_logging.enable_progress_bar()


def _from_pretrained(class_name: str, source: str, torch_dtype: torch.dtype, *, local: bool):
    import diffusers

    cls = getattr(diffusers, class_name)
    # Newer diffusers renamed torch_dtype to dtype (the old name warns); older ones know only torch_dtype.
    from diffusers.utils import deprecation_utils

    dtype_kwarg = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    kwargs: dict = {dtype_kwarg: torch_dtype, "local_files_only": local}
    if importlib.util.find_spec("accelerate") is None:
        kwargs["low_cpu_mem_usage"] = False  # what diffusers falls back to anyway, minus its warning
    if class_name == "StableDiffusionXLPipeline":
        kwargs["add_watermarker"] = False
    elif class_name == "StableDiffusionPipeline":
        kwargs.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    with _no_progress_bars():
        return cls.from_pretrained(source, **kwargs)


def load_pipeline(
    model: str = "demo", *, device: str = "cpu", dtype: str = "float32", compile: bool | str = False,
    recipe: GpuRecipe | None = None,
) -> LoadedModel:
    """Load (or build) the pipeline named by ``model``, on ``device`` in ``dtype``; uncached.

    Args:
        model: ``"demo"`` (the shipped trained digits model), ``"demo:<family>"`` (random weights),
            a local pipeline directory, or a hub id.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:<n>"`` or ``"auto"`` (cuda if available).
        dtype: ``"float32"``; ``"float16"`` / ``"bfloat16"`` on CUDA only (see ``LoadedModel``
            for the components kept in float32).
        compile: ``torch.compile`` the UNet (see ``from_pipeline``); pays a compilation on the first
            batch of each shape (``ddim.warm_up``), worth it for long runs on GPU.
        recipe: the GPU recipe's switches (``gpu_recipe.GpuRecipe``; default: all off).

    Raises:
        ValueError (``ModelLoadError``): the path does not exist, is not an SD-family diffusers
            pipeline, fails to load, or the hub id cannot be fetched (e.g. offline); the message
            names the spec. Also for an unknown device/dtype or a half dtype off CUDA.
    """
    # 1. Check inputs
    if not isinstance(model, str) or not model.strip():
        raise ModelLoadError(f"model must be 'demo', a pipeline directory or a hub id, got {model!r}")
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, torch_device)

    # 2. Build or load
    note = None
    if model == "demo":
        path = trained_demo_dir()
        if not (path / "model_index.json").is_file():
            raise ModelLoadError(
                f"model 'demo': the shipped weights are missing from {str(path)!r} (a broken install?); "
                "train them with 'python scripts/train_demo.py --out <dir>' and pass that directory, "
                "or use a random-weight build such as 'demo:sd1'"
            )
        try:
            pipe = _from_pretrained(_check_pipeline_dir(path), str(path), torch_dtype, local=True)
        except Exception as err:  # noqa: BLE001 - a damaged install must say so, not crash deep inside
            raise ModelLoadError(f"model 'demo': the shipped weights in {str(path)!r} could not be loaded: {err}") from err
        model_id, revision, is_demo = model, TRAINED_DEMO_REVISION_PREFIX + content_revision(path), True
        note = TRAINED_DEMO_NOTE
    elif model.startswith("demo:"):
        family = model.partition(":")[2]
        if family not in demo_names():
            raise ModelLoadError(f"model {model!r}: demo family must be one of {demo_names()}")
        pipe = for_name(family).build_demo(family)
        model_id, revision, is_demo = model, DEMO_REVISION_FORMAT.format(family=family), True
        note = RANDOM_DEMO_NOTE
    else:
        path = Path(model).expanduser()
        if path.exists():
            path = path.resolve()
            if not path.is_dir():
                raise ModelLoadError(f"model path {str(path)!r} is a file; expected a diffusers pipeline directory")
            class_name = _check_pipeline_dir(path)
            try:
                pipe = _from_pretrained(class_name, str(path), torch_dtype, local=True)
            except Exception as err:  # noqa: BLE001 - any loader failure is a bad model directory
                raise ModelLoadError(f"model directory {str(path)!r} could not be loaded: {err}") from err
            model_id, revision = str(path), local_revision(path)
        elif _HUB_ID.match(model) and not model.startswith((".", "~")):
            try:
                from diffusers import DiffusionPipeline

                config = DiffusionPipeline.load_config(model)
                class_name = config.get("_class_name")
                for_class(class_name, where=f"hub model {model!r}")
                pipe = _from_pretrained(class_name, model, torch_dtype, local=False)
            except InputError:
                raise
            except Exception as err:  # noqa: BLE001 - network, auth, missing files: all "cannot load"
                raise ModelLoadError(
                    f"model {model!r} is not a local directory and could not be loaded from the Hugging Face "
                    f"Hub (offline, or no such repository?): {type(err).__name__}: {err}"
                ) from err
            model_id, revision = model, _hub_revision(model)
        else:
            raise ModelLoadError(f"model path {str(path)!r} does not exist (and is not a hub id 'org/name')")
        is_demo = False

    # 3. Normalise: DDIM scheduler, no progress bars, device, precision, memory format, compile
    return from_pipeline(pipe, model_id=model_id, revision=revision, is_demo=is_demo, note=note,
                         device=torch_device, dtype=torch_dtype, compile=compile, recipe=recipe)


_TWIN_GUARD = threading.Lock()


def float32_twin(model: LoadedModel) -> LoadedModel:
    """The same pipeline with every component in float32 and uncompiled: the precision fallback.

    ``model`` itself where it is already float32 throughout. Otherwise built on first use and kept
    on ``model`` (float32 copies of the half-precision components only: e.g. +2x the UNet's memory
    on GPU, paid only by a run where some sample needed it).
    """
    modules = {k: v for k, v in model.pipe.components.items() if isinstance(v, torch.nn.Module)}
    compiled_parts = any(has_compiled_child(m) for m in modules.values())  # gpu.compile_vae
    if not model.compiled and not compiled_parts and all(
            p.dtype == torch.float32 for m in modules.values() for p in m.parameters()):
        return model
    with _TWIN_GUARD:
        twin = model._twins.get("float32")
        if twin is None:
            pipe = copy.copy(model.pipe)  # shallow: shares tokenizers, scheduler and float32 modules
            for name, module in modules.items():
                base = getattr(module, "_orig_mod", module)  # torch.compile's wrapper
                if any(p.dtype != torch.float32 for p in base.parameters()) or has_compiled_child(base):
                    base = torch.nn.Module.to(uncompiled_copy(base), torch.float32)  # no diffusers fp32 notice
                setattr(pipe, name, base)
            twin = model._twins["float32"] = LoadedModel(
                pipe=pipe, model_id=model.model_id, revision=model.revision, family=model.family,
                is_demo=model.is_demo, resolution=model.resolution, seed_shape=model.seed_shape,
                device=model.device, dtype=torch.float32, scheduler=model.scheduler, note=model.note,
            )
        return twin


def from_pipeline(
    pipe,
    *,
    model_id: str,
    revision: str,
    is_demo: bool = False,
    note: str | None = None,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    compile: bool | str = False,
    recipe: GpuRecipe | None = None,
) -> LoadedModel:
    """Make a ``LoadedModel`` of an SD-family pipeline object: DDIM scheduler, progress bars off,
    moved to ``device``/``dtype`` with the precision rules of ``LoadedModel``; on CUDA the UNet and
    VAE in channels_last (faster convolutions with cuDNN); attention is PyTorch's SDPA (diffusers'
    default processor on torch 2). ``compile``: wrap the UNet in ``torch.compile`` (``True``:
    inductor; a string names another backend) with ``dynamic=False``. ``recipe``: the GPU recipe's
    switches (``gpu_recipe``: compile mode, compiled VAE decoder, fused QKV, fp16 VAE, cuDNN
    autotuning, TF32), all off by default.

    ``load_pipeline`` ends here; tests use it directly to run a real pipeline in half precision on
    CPU (which ``load_pipeline`` refuses: slow, and only good for forcing precision failures).
    """
    torch_device = resolve_device(device)
    recipe = recipe or DEFAULT_RECIPE
    family = for_class(type(pipe).__name__, where="the pipeline")
    family.prepare(pipe)  # SD families: DDIM from the checkpoint's config; flow matching: its Euler scheduler
    pipe.set_progress_bar_config(disable=True)
    pipe.to(torch_device)
    if family.denoiser(pipe).dtype != dtype:  # from_pretrained already loaded in dtype; the demos are float32
        pipe.to(dtype=dtype)
    if dtype == torch.float16:
        if pipe.vae.config.get("force_upcast", False) and not recipe.vae_half:
            # The SD/SDXL VAEs overflow in fp16 (NaN images); the pipelines upcast them, so do we, once.
            pipe.vae.to(torch.float32)
        else:
            pipe.vae.encoder.to(torch.float32)
            if getattr(pipe.vae, "quant_conv", None) is not None:
                pipe.vae.quant_conv.to(torch.float32)
    if torch_device.type == "cuda":
        if getattr(pipe, "unet", None) is not None:
            pipe.unet.to(memory_format=torch.channels_last)
        pipe.vae.to(memory_format=torch.channels_last)
    apply_process_flags(recipe, torch_device)
    if recipe.fuse_qkv:
        fuse_qkv(family.denoiser(pipe))
    backend = "inductor" if compile in (True, False) else str(compile)
    if compile:
        family.set_denoiser(pipe, torch.compile(family.denoiser(pipe), **compile_kwargs(recipe, backend)))
    if recipe.compile_vae:
        pipe.vae.decoder = torch.compile(pipe.vae.decoder, **compile_kwargs(recipe, backend))
    resolution, seed_shape = family.geometry(pipe)
    return LoadedModel(
        pipe=pipe,
        model_id=model_id,
        revision=revision,
        family=family.describe(pipe),
        is_demo=is_demo,
        resolution=resolution,
        seed_shape=seed_shape,
        device=torch_device,
        dtype=dtype,
        scheduler=type(pipe.scheduler).__name__,
        note=note,
        compiled=bool(compile),
    )


# 4. In-process cache ----------------------------------------------------------------------------

_CACHE: dict[tuple[str, ...], LoadedModel] = {}
_CACHE_GUARD = threading.Lock()
_KEY_LOCKS: dict[tuple[str, ...], threading.Lock] = {}


def _cache_key(model: str, device: str, dtype: str, compile: bool | str,
               recipe: GpuRecipe | None = None) -> tuple[str, ...]:
    path = Path(model).expanduser()
    spec = str(path.resolve()) if path.exists() else model
    torch_device = resolve_device(device)
    backend = "" if not compile else ("inductor" if compile is True else str(compile))
    return spec, str(torch_device), str(resolve_dtype(dtype, torch_device)), backend, (recipe or DEFAULT_RECIPE).key()


def get_pipeline(
    model: str = "demo", *, device: str = "cpu", dtype: str = "float32", compile: bool | str = False,
    recipe: GpuRecipe | None = None,
) -> LoadedModel:
    """``load_pipeline`` memoised per (model, device, dtype, compile, recipe) in this process; thread-safe.

    Two threads asking for the same key load it once (the second waits); different keys load in
    parallel. Failures are not cached.
    """
    key = _cache_key(model, device, dtype, compile, recipe)
    with _CACHE_GUARD:
        if key in _CACHE:
            return _CACHE[key]
        key_lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with key_lock:
        with _CACHE_GUARD:
            if key in _CACHE:
                return _CACHE[key]
        loaded = load_pipeline(model, device=device, dtype=dtype, compile=compile, recipe=recipe)
        with _CACHE_GUARD:
            _CACHE[key] = loaded
        return loaded


def clear_pipeline_cache() -> None:
    """Forget every cached pipeline (tests; freeing GPU memory between runs)."""
    with _CACHE_GUARD:
        _CACHE.clear()
        _KEY_LOCKS.clear()
