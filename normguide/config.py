"""The typed run configuration, shared by the CLI, the flows and the deployments.

One model, :class:`RunConfig`, holds everything a run needs. A YAML or JSON file can supply
it (:func:`load_config`); the CLI and Prefect parameters override single fields. Secrets
(storage credentials) are :class:`pydantic.SecretStr` and never reach logs, run.json, the
manifest or error messages: :meth:`RunConfig.public_dict` is the only form that is written out.

Pure settings: nothing here reads a file or storage. The concept table is read once per run, by
the run context (``normguide.data.concept_table.TableSnapshot``), and its digest is what
:meth:`RunConfig.run_id_for` names the run with.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer, field_validator, model_validator

from normguide.data.schema import TableLimits

#: The shipped example (inside the package, so an installed normguide finds it from any directory):
#: the demo model's rare digits with held-out real references (examples/make_examples.py).
EXAMPLE_DIR = Path(__file__).resolve().parent / "demo" / "example"
DEFAULT_CONCEPTS = str(EXAMPLE_DIR / "concepts.parquet")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


#: Classifier-free guidance scales accepted: 1 is no guidance; below 1 or above this is degenerate.
MAX_GUIDANCE_SCALE = 100.0


def _check_guidance(value: float, field: str) -> float:
    import math

    if not (math.isfinite(value) and 1.0 <= value <= MAX_GUIDANCE_SCALE):
        raise ValueError(f"{field} must be between 1.0 (no guidance) and {MAX_GUIDANCE_SCALE:g}, got {value!r}")
    return value


class InversionConfig(_Section):
    """Inversion of the reference images to seeds (DDIM for SD families, the flow ODE backwards for flow matching)."""

    num_inference_steps: int = Field(50, ge=1, description="DDIM inversion steps (at most limits.max_steps).")
    guidance_scale: float = Field(1.0, description="Classifier-free guidance during inversion: 1 (none) up to 100.")
    batch_size: int = Field(4, ge=1, description="Images inverted per batch.")
    batch_invariant: bool = Field(
        False, description="One sample at a time inside a batch, so a seed does not depend on its batch mates "
        "(off: batched, bare diffusers' bytes at the same batch size); see generation.")
    inverter: str | None = Field(
        None, description="Inverter (image -> seed): ddim, ddim-reg, flow-euler, flow-midpoint, flow-fireflow; unset: the model "
        "family's default (ddim for SD/SDXL, flow-euler for SD3/FLUX). See docs/models.md.")
    reconstruction: bool = Field(
        False, description="Denoise each seed again and record its reconstruction error (the round trip: one more "
        "denoising pass per reference, about as much again as the inversion; off by default, on for a gate or a study)."
    )

    @field_validator("guidance_scale")
    @classmethod
    def _guidance(cls, v: float) -> float:
        return _check_guidance(v, "inversion.guidance_scale")

    max_round_trip_error: float | None = Field(
        None, gt=0, description="The round-trip gate: a reference whose reconstruction error (latent RMSE of invert -> "
        "regenerate) exceeds this is left out of its concept's seed pool, named in a warning; the concept fails alone "
        "when none remains. Needs reconstruction: true. Default: no gate.")

    @model_validator(mode="after")
    def _gate_needs_the_round_trip(self) -> InversionConfig:
        if self.max_round_trip_error is not None and not self.reconstruction:
            raise ValueError("inversion.max_round_trip_error needs inversion.reconstruction: true (the gate reads the "
                             "round-trip error the reconstruction pass records)")
        return self

    @field_validator("inverter")
    @classmethod
    def _inverter(cls, v: str | None) -> str | None:
        from normguide.diffusion.inverters import check_inverter_name

        return check_inverter_name(v, field="inversion.inverter")

    @field_validator("batch_invariant", mode="before")
    @classmethod
    def _null_is_batched(cls, v):  # null: the default (configs and run.json records from before it was a bool)
        return False if v is None else v


class GenerationConfig(_Section):
    """Image generation from the planned seeds."""

    num_inference_steps: int = Field(50, ge=1, description="DDIM denoising steps (at most limits.max_steps).")
    guidance_scale: float = Field(7.5, description="Classifier-free guidance scale: 1 (none) up to 100.")
    batch_size: int = Field(4, ge=1, description="Images generated per batch.")
    batch_invariant: bool = Field(
        False, description="Run the models one sample at a time inside a batch, so a seed gives the same bytes "
        "whatever its batch and batch mates (slower: ~3-5x on CPU at batch 8-32); off: batches run whole, "
        "with bare diffusers' bytes at the same batch size (docs/determinism.md).")
    vae_batch_size: int | None = Field(
        None, ge=1, description="Images decoded by the VAE at once (default: all on CPU; 8 at 512 px on CUDA).")
    batch_across_concepts: bool = Field(
        False, description="Fill generation batches across concept boundaries (each row with its own prompt), "
        "in groups of consecutive concepts of about 4 batches of images; concepts are still inverted and planned "
        "one by one, and fail alone. Fewer, fuller batches where concepts have fewer images than a batch. With "
        "batch_invariant the bytes are those of per-concept batches; batched, the last bits may differ "
        "(docs/gpu.md, docs/determinism.md). Not part of the run id.")

    @field_validator("guidance_scale")
    @classmethod
    def _guidance(cls, v: float) -> float:
        return _check_guidance(v, "generation.guidance_scale")

    @field_validator("batch_invariant", mode="before")
    @classmethod
    def _null_is_batched(cls, v):  # null: the default (configs and run.json records from before it was a bool)
        return False if v is None else v


class PlanConfig(_Section):
    """How many seeds to plan per concept and method, and where on the paths they sit."""

    methods: tuple[str, ...] = Field(
        ("nao",), min_length=1,
        description="Seed methods (ablations); `normguide methods` lists them (normguide.data.plan.SEED_METHODS).",
    )
    num_images: int = Field(8, ge=1, description="Images per concept and method (the concept's num_images overrides; at most limits.max_images_per_concept).")
    include_centroid: bool = Field(True, description="Plan the centroid of the inverted seeds as the first image.")
    pair_paths: bool = Field(True, description="Sample interpolants on paths between pairs of inverted seeds.")
    centroid_paths: bool = Field(True, description="Sample interpolants on paths from the centroid to each seed.")
    include_inversions: bool = Field(False, description="Also regenerate each inverted seed itself (kind=inversion).")
    t_values: tuple[float, ...] | None = Field(
        None, description="Fixed interior t values in (0, 1) for every path; default: evenly spaced to reach num_images."
    )

    @field_validator("methods")
    @classmethod
    def _known_unique_methods(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        from normguide.data.methods import METHODS  # the registry's names (no torch)

        unknown = [m for m in v if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown method(s) {unknown}; expected some of {', '.join(METHODS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"methods must not repeat, got {list(v)}")
        return v

    @field_validator("t_values")
    @classmethod
    def _interior_t(cls, v: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if v is not None:
            bad = [t for t in v if not 0.0 < t < 1.0]
            if bad or not v:
                raise ValueError(f"t_values must be a non-empty list of values strictly between 0 and 1, got {list(v)}")
        return v

    @model_validator(mode="after")
    def _some_kind(self) -> "PlanConfig":
        if not (self.include_centroid or self.pair_paths or self.centroid_paths or self.include_inversions):
            raise ValueError(
                "plan: at least one of include_centroid, pair_paths, centroid_paths, include_inversions must be true"
            )
        return self


class RefineConfig(_Section):
    """SeedSelect refinement of the planned seeds before generation (normguide.diffusion.refine;
    docs/refinement.md). Off by default. Unset hyper-parameters come from the paper's preset for
    each seed's method (``preset: auto``: ``random`` seeds get the start-from-random preset, every
    other method the start-from-NAO one)."""

    enabled: bool = Field(False, description="SeedSelect-refine every planned seed before generation (docs/refinement.md).")
    preset: Literal["auto", "nao", "random"] = Field(
        "auto", description="The paper's settings: 'nao' (lr 0.05, 5 iterations, guidance 1), 'random' (lr 0.1, "
        "30 iterations, guidance 7.5), or 'auto' (random seeds: 'random', others: 'nao').")
    iterations: int | None = Field(None, ge=0, le=10_000, description="Optimisation iterations per seed.")
    learning_rate: float | None = Field(None, gt=0, description="AdamW learning rate on the seed.")
    lr_decay_at: int | None = Field(None, ge=0, description="Iteration from which the learning rate is multiplied by lr_decay_factor (paper: 3).")
    lr_decay_factor: float | None = Field(None, gt=0, description="That factor (paper: 0.1; 1 keeps it constant).")
    semantic_weight: float | None = Field(None, ge=0, description="Weight of the semantic (feature) loss (paper: 10).")
    appearance_weight: float | None = Field(None, ge=0, description="Weight of the appearance (latent) loss (paper: 1).")
    step_weights: tuple[float, ...] | None = Field(None, description="Semantic-loss weights of the last DDIM steps, oldest first (paper: 0.05, 0.25, 0.7).")
    num_inference_steps: int | None = Field(None, ge=1, le=1000, description="DDIM steps of each refinement pass (paper: 20).")
    guidance_scale: float | None = Field(None, description="Guidance of the refinement passes (paper: 1 from NAO, 7.5 from random).")
    stop_below: float | None = Field(None, description="Stop a seed once its loss is at or below this.")
    stop_tolerance: float | None = Field(None, ge=0, description="Stop a seed once its loss improves by less than this fraction per iteration.")
    divergence_ratio: float = Field(2.0, gt=0, description="A final loss above this multiple of the start loss falls back to the unrefined seed.")
    feature_model: str = Field(
        "auto", description="Feature model of the semantic loss: a local CLIP directory, 'demo' (the demo's "
        "autoencoder), or 'auto' (the demo's for the demo model; other models need a CLIP directory).")
    batch_size: int = Field(8, ge=1, description="Seeds refined together (one optimiser per batch; a seed's path is its own).")
    gradient_checkpointing: bool = Field(True, description="Recompute activations in the backward pass (less memory, ~1 more forward).")

    @model_validator(mode="after")
    def _settings(self) -> "RefineConfig":
        if self.enabled:
            for method in ("nao", "random"):
                self.settings_for(method)  # ValueError naming the refine.* field
        return self

    def preset_for(self, method: str) -> str:
        """The preset a seed of ``method`` starts from."""
        return self.preset if self.preset != "auto" else ("random" if method == "random" else "nao")

    def settings_for(self, method: str):
        """The library settings (``normguide.diffusion.refine.RefineSettings``) for seeds of ``method``."""
        from normguide.diffusion.refine import PRESETS, with_overrides

        return with_overrides(
            PRESETS[self.preset_for(method)], iterations=self.iterations, learning_rate=self.learning_rate,
            lr_decay_at=self.lr_decay_at, lr_decay_factor=self.lr_decay_factor,
            semantic_weight=self.semantic_weight, appearance_weight=self.appearance_weight,
            step_weights=self.step_weights, num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale, stop_below=self.stop_below, stop_tolerance=self.stop_tolerance,
            divergence_ratio=self.divergence_ratio, gradient_checkpointing=self.gradient_checkpointing,
        )


class EvaluationConfig(_Section):
    """How good the run's images are (``eval/`` under the run; see normguide.evaluation).

    Nothing here changes the dataset's content, so these settings are not part of the run id.
    """

    enabled: bool | None = Field(
        None, description="Evaluate after generation; default: on for the built-in demo model (it ships its judge), "
        "else on when a judge is configured (clip_model)."
    )
    judge: Literal["auto", "digits", "clip"] = Field(
        "auto", description="Feature model: 'digits' (the demo's classifier), 'clip' (clip_model), or 'auto'."
    )
    clip_model: str | None = Field(None, description="Local directory of a transformers CLIP model (never downloaded).")
    real_test: str | None = Field(
        None, description="Concept table (Parquet) whose reference_uris are held-out REAL images per concept, "
        "for train-on-synthetic-test-on-real; the demo uses its own held-out digits."
    )
    labelled_table: str | None = Field(
        None, description="Labelled REAL images (Parquet: image_uri, label, split in {train, test}; a local path or "
        "s3:// URI, relative image paths against the table's folder) for the long-tail protocol: a linear probe on "
        "evaluation.clip_model's features, trained on the train split plus each method's images, tested on the test "
        "split (eval/longtail.parquet). The run's concepts are its rare classes: their labels are the concept_ids; "
        "every other label is a common class. Needs clip_model."
    )

    @model_validator(mode="after")
    def _labelled_table_needs_clip(self) -> EvaluationConfig:
        if self.labelled_table and not self.clip_model:
            raise ValueError("evaluation.labelled_table needs evaluation.clip_model (a local CLIP directory): the "
                             "long-tail protocol is a linear probe on its image features")
        return self


class LimitsConfig(_Section):
    """Bounds on what one run may ask of the machine (docs/limits.md). Each is checked before
    any model work, with a one-line error naming the concept, table or setting; raise one when a
    real workload needs it. Not part of the run id (they change no image)."""

    max_concepts: int = Field(TableLimits.max_concepts, ge=1, description="Concepts (rows) in the concept table.")
    max_references_per_concept: int = Field(TableLimits.max_references_per_concept, ge=1, description="Reference images of one concept.")
    max_images_per_concept: int = Field(
        TableLimits.max_images_per_concept, ge=1, description="Images of one concept and method (plan.num_images, the table's num_images).")
    max_steps: int = Field(1_000, ge=1, description="Inversion and generation steps (num_inference_steps).")
    max_prompt_chars: int = Field(
        TableLimits.max_prompt_chars, ge=1, description="Characters of a concept's prompt (its own, or the template with its name), checked "
        "on the table before anything is loaded.")
    max_prompt_tokens: int | None = Field(
        None, ge=1, description="Tokens of a prompt in the model's tokenizer, checked once the model is loaded; "
        "default (and most): what the tokenizer reads (77 for CLIP), so no prompt is silently cut short.")


class GpuConfig(_Section):
    """The GPU recipe's switches (docs/gpu.md), all off by default: each can change the last bits of
    an image, so none is on unless asked for. Like ``compile``, not part of the run id. They act on
    CUDA (``vae_half`` on float16 only); on CPU they change nothing but ``compile_vae`` and
    ``fuse_qkv``."""

    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = Field(
        "default", description="torch.compile mode when compile is on (reduce-overhead and max-autotune use CUDA graphs).")
    compile_vae: bool = Field(False, description="Also torch.compile the VAE decoder (same backend and mode).")
    fuse_qkv: bool = Field(False, description="Fuse the attention query/key/value projections of the UNet/transformer "
                           "(diffusers' fuse_qkv_projections).")
    vae_half: bool = Field(False, description="float16 only: decode in float16 even where the VAE's config sets "
                           "force_upcast (SD 1.x), as diffusers' StableDiffusionPipeline does; overflows retry in float32.")
    cudnn_benchmark: bool = Field(False, description="torch.backends.cudnn.benchmark (process-wide, CUDA): cuDNN picks "
                                  "its fastest convolution per shape.")
    tf32: bool = Field(False, description="TF32 tensor cores for float32 matmuls (torch.set_float32_matmul_precision"
                       "('high'); process-wide, CUDA).")


class CostConfig(_Section):
    """What the run's throughput costs (run.json ``cost``, the summary, the dataset card;
    docs/outputs.md). Not part of the run id: a price changes no image."""

    device_price_per_hour: float | None = Field(
        None, description="Price of one device (GPU, or the machine on CPU) per hour, in USD: gives run.json's "
        "usd_per_1000_images. Default: not priced.")
    peak_tflops: float | None = Field(
        None, description="The device's peak TFLOP/s in the run's dtype, for MFU where normguide does not know it "
        "(CPUs, unlisted GPUs); default: the vendor table in normguide.diffusion.flops (CUDA devices only).")

    @field_validator("device_price_per_hour")
    @classmethod
    def _price(cls, v: float | None) -> float | None:
        import math

        if v is not None and not (math.isfinite(v) and v >= 0):
            raise ValueError(f"cost.device_price_per_hour must be a finite number of USD per hour, 0 or more, got {v!r}")
        return v

    @field_validator("peak_tflops")
    @classmethod
    def _peak(cls, v: float | None) -> float | None:
        import math

        if v is not None and not (math.isfinite(v) and v > 0):
            raise ValueError(f"cost.peak_tflops must be a finite number of TFLOP/s above 0, got {v!r}")
        return v


#: Export formats written after a run is finalized (``export:`` in the config; normguide.export).
EXPORT_FORMATS = ("hf", "webdataset")
#: Samples per export shard (a WebDataset tar, an hf Parquet file): at 512x512 a PNG is ~0.3-0.5 MB,
#: so 1000 makes shards of ~300-500 MB, the size streaming loaders are tuned for.
DEFAULT_EXPORT_SHARD_SIZE = 1000


class StorageConfig(_Section):
    """fsspec storage options for s3:// inputs and outputs (endpoint, credentials).

    Credentials are taken, in order, from: ``key``/``secret`` here, a prefect-aws
    ``AwsCredentials`` block named by ``aws_credentials_block``, then the standard AWS
    environment variables and profiles (boto's own chain).
    """

    endpoint_url: str | None = Field(None, description="S3-compatible endpoint (MinIO, Ceph, R2, a local server).")
    region_name: str | None = Field(None, description="AWS region.")
    profile: str | None = Field(None, description="AWS profile name from ~/.aws.")
    key: SecretStr | None = Field(None, description="Access key id (prefer the environment or a block).")
    secret: SecretStr | None = Field(None, description="Secret access key (prefer the environment or a block).")
    token: SecretStr | None = Field(None, description="Session token.")
    aws_credentials_block: str | None = Field(None, description="Name of a prefect-aws AwsCredentials block.")
    retry_seconds: float | None = Field(
        None, gt=0, description="How long output reads and writes retry an unreachable or failing endpoint "
        "(exponential backoff) before the run fails; default 60."
    )
    allowed_input_roots: list[str] | None = Field(
        None, description="Roots (s3://bucket/prefix, or local folders) the concept table's reference images must "
        "lie under; others are refused before any work. Default: a table on S3 may reference only its own folder, a "
        "local table anything. Local folders are allowed for an S3 table only when listed here (docs/reliability.md)."
    )
    extra: dict[str, Any] = Field(default_factory=dict, repr=False, description="Other s3fs/fsspec options (hidden from repr; keys that look secret are masked in run.json).")

    @field_validator("allowed_input_roots")
    @classmethod
    def _input_roots(cls, v: list[str] | None) -> list[str] | None:
        from normguide.data.storage.uris import check_output_root

        if v is not None and not v:
            raise ValueError("storage.allowed_input_roots: give at least one root, or leave it out for the default")
        for root in v or ():
            check_output_root(root, field="storage.allowed_input_roots")  # a bucket or folder, never '/'
        return v

    def __repr_args__(self):  # repr/str: no user:password@ of the endpoint either
        from normguide.masking import strip_userinfo

        for name, value in super().__repr_args__():
            yield name, (strip_userinfo(value) if isinstance(value, str) else value)

    @field_serializer("extra", "endpoint_url", when_used="json")
    def _no_credentials_in_json(self, value: Any) -> Any:
        """JSON (run.json, Prefect's stored flow-run parameters) never carries a credential:
        like the SecretStr fields, credential-like ``extra`` keys (any depth) are masked and URL
        userinfo is stripped; the Python objects keep them for the run itself."""
        from normguide.masking import mask_credentials

        return mask_credentials(value, keys=isinstance(value, dict))


class RunConfig(BaseModel):
    """Everything one dataset-generation run needs.

    Args:
        concepts: Concept table (Parquet), a local path or an fsspec URI (s3://...).
        output: Output root; the run writes under ``<output>/<run_id>/``.
        run_id: Names the run; default derived from the content-defining fields and the concept
            table's content (not its path), so a rerun of the same configuration and table
            resumes (or is a no-op once complete), from wherever the table is read.
        model: ``demo``, a local diffusers pipeline directory, or a hub id.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        dtype: ``float32``, ``float16`` or ``bfloat16`` (half precision on CUDA only).
        prompt_template: Prompt for concepts without their own; ``{name}`` is replaced.
        seed: Base seed of the ``random`` method (per concept and index, deterministic).
        inversion: DDIM inversion settings.
        generation: Generation settings.
        plan: Seed plan settings (methods, counts, t values).
        refine: SeedSelect refinement of the planned seeds (off by default).
        storage: S3 endpoint and credentials.
        evaluation: Whether and how the images are evaluated (not part of the run id).
        cost: Device price and peak for run.json's MFU and cost (not part of the run id).
        export: Formats to export the finished dataset to (``hf``, ``webdataset``; not part of
            the run id: adding one to a complete run only writes the export).
        export_shard_size: Samples per export shard (WebDataset tar, hf Parquet file).
        gpu: the GPU recipe's switches (compile mode, compiled VAE decoder, fused QKV, fp16 VAE,
            cuDNN autotuning, TF32), all off; not part of the run id.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    concepts: str = Field(DEFAULT_CONCEPTS, description="Concept table (Parquet): a path or fsspec URI.")
    output: str = Field("./outputs", description="Output root: a local directory or s3://bucket/prefix.")
    run_id: str | None = Field(None, description="Run id; default derived from the configuration.")
    model: str = Field("demo", description="'demo', a local diffusers directory, or a hub id.")
    device: str = Field("cpu", description="cpu, cuda, cuda:N or auto.")
    dtype: Literal["float32", "float16", "bfloat16"] = Field("float32", description="Model dtype.")
    compile: bool = Field(False, description="torch.compile the UNet (fixed shapes, warmed up once per worker).")
    gpu: GpuConfig = Field(default_factory=GpuConfig, description="The GPU recipe's speed switches (docs/gpu.md), all off.")
    prompt_template: str = Field("a photo of a {name}", description="Prompt template; {name} is the concept's name.")
    seed: int = Field(0, ge=0, description="Base seed of the random method.")
    inversion: InversionConfig = Field(default_factory=InversionConfig)
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    plan: PlanConfig = Field(default_factory=PlanConfig)
    refine: RefineConfig = Field(default_factory=RefineConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    cost: CostConfig = Field(default_factory=CostConfig)
    export: tuple[str, ...] = Field((), description="Export formats written after the run: hf, webdataset.")
    export_shard_size: int = Field(DEFAULT_EXPORT_SHARD_SIZE, ge=1, description="Samples per export shard.")
    strict_references: bool = Field(False, description="Refuse the whole run (exit 2) when any reference image is "
                                    "unusable; default: skip only the concepts whose references are bad (exit 1).")

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, v: str | None) -> str | None:
        from normguide.data.schema import check_safe_id

        if v is not None:
            check_safe_id(v, field="run_id")
        return v

    @field_validator("export")
    @classmethod
    def _known_formats(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [f for f in v if f not in EXPORT_FORMATS]
        if bad:
            raise ValueError(f"export: unknown format(s) {bad}; choose from {list(EXPORT_FORMATS)}")
        if len(set(v)) != len(v):
            raise ValueError(f"export: formats must not repeat, got {list(v)}")
        return v

    @field_validator("output")
    @classmethod
    def _safe_output(cls, v: str) -> str:
        from normguide.data.storage.uris import check_output_root

        return check_output_root(v, field="output")

    @field_validator("prompt_template")
    @classmethod
    def _template(cls, v: str) -> str:
        from normguide.data.text import check_template  # only plain {name}: normguide.data.text

        return check_template(v, where="prompt_template")

    @model_validator(mode="after")
    def _within_limits(self) -> "RunConfig":
        lim, bad = self.limits, []
        for field, value, most, name in (
            ("inversion.num_inference_steps", self.inversion.num_inference_steps, lim.max_steps, "max_steps"),
            ("generation.num_inference_steps", self.generation.num_inference_steps, lim.max_steps, "max_steps"),
            ("plan.num_images", self.plan.num_images, lim.max_images_per_concept, "max_images_per_concept"),
            ("prompt_template", len(self.prompt_template), lim.max_prompt_chars, "max_prompt_chars"),
        ):
            if value > most:
                what = f"is {value:,} characters long" if field == "prompt_template" else f"is {value:,}"
                bad.append(f"{field} {what}, more than limits.{name} ({most:,})")
        if bad:
            raise ValueError("; ".join(bad))
        return self

    # -- derived --------------------------------------------------------------------------
    def content_dict(self) -> dict[str, Any]:
        """The settings that decide the dataset's content (not where it goes or who reads it).

        The concept table is not among them: its *content* enters the default run id
        (:meth:`run_id_for`), and a run with a fixed run id follows the table as it changes
        (new concepts reopen a complete run)."""
        d = self.model_dump(mode="json", exclude={"concepts", "output", "run_id", "storage", "device", "evaluation", "export",
                                                 "export_shard_size", "compile", "gpu", "limits", "strict_references",
                                                 "cost"})
        d["inversion"].pop("batch_size", None)
        for key in ("inverter", "max_round_trip_error"):  # unset: run ids of runs that set neither stay as they were
            if d["inversion"].get(key) is None:
                d["inversion"].pop(key, None)
        d["generation"].pop("batch_size", None)
        d["generation"].pop("vae_batch_size", None)
        d["generation"].pop("batch_across_concepts", None)
        if self.refine.enabled:
            d["refine"].pop("gradient_checkpointing", None)  # recomputation changes no value
        else:
            d.pop("refine")  # off: the run id of a run without refinement is what it always was
        return d

    def run_id_for(self, table_digest: str) -> str:
        """``run_id`` if given, else ``run-`` + 12 hex digits of the hash of the content settings
        and the concept table's content digest (``TableSnapshot.digest``): the same settings and
        table give the same id wherever the table is read from, so a rerun resumes."""
        if self.run_id:
            return self.run_id
        blob = json.dumps({**self.content_dict(), "table": table_digest}, sort_keys=True).encode()
        return "run-" + hashlib.sha256(blob).hexdigest()[:12]

    def pinned(self, table_digest: str) -> "RunConfig":
        """This config with its run id fixed (``run_id=run_id_for(table_digest)``): what a driver
        hands on, so every step, task and shard names the same run even if the table changes
        meanwhile."""
        return self if self.run_id else self.with_overrides(run_id=self.run_id_for(table_digest))

    def inline_secrets(self) -> list[str]:
        """The credentials set in this config itself: ``storage.key``/``secret``/``token``, any
        ``storage.extra`` key that names a credential (at any depth: ``extra.client_kwargs.
        aws_secret_access_key``, ``password``, ...) and any URL carrying ``user:password@``
        (``storage.endpoint_url``, URLs in ``extra``, the concept table, the output). They must
        not travel as deployment or flow-run parameters, which the Prefect API stores in clear."""
        from normguide.masking import credential_paths

        found = [f"storage.{k}" for k in ("key", "secret", "token") if getattr(self.storage, k) is not None]
        plain = self.model_dump(mode="python", exclude={"storage": {"key", "secret", "token", "extra"}})
        found += credential_paths(self.storage.extra, "storage.extra")
        found += credential_paths(plain, "", keys=False)  # URLs with user:password@ anywhere
        return found

    def parameter_secrets(self) -> list[str]:
        """The credentials that must not travel as a flow-run parameter: all of
        :meth:`inline_secrets`, ``storage.key``/``secret``/``token`` included (Prefect stores those
        masked, but they still cross the API, and a stored parameter could not be resolved anyway).
        A flow receives a reference instead (environment, profile, prefect-aws block) and resolves
        it on the worker."""
        return self.inline_secrets()

    def public_dict(self) -> dict[str, Any]:
        """JSON-able dict with every secret masked; the only form written to run.json or logs.

        Masked: ``storage.key``/``secret``/``token``, the value of every ``storage.extra`` key
        that names a credential at any depth, and the ``user:password@`` of every URL."""
        from normguide.masking import MASK, mask_credentials

        d = self.model_dump(mode="json")
        st = d["storage"]
        for k in ("key", "secret", "token"):
            if st.get(k) is not None:
                st[k] = MASK
        st["extra"] = mask_credentials(st["extra"])
        return mask_credentials(d, keys=False)  # URLs with user:password@ anywhere

    def with_overrides(self, **overrides: Any) -> "RunConfig":
        """A copy with dotted-path overrides applied (``{"generation.guidance_scale": 3.0}``), validated."""
        data = self.model_dump(mode="python")
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for p in parents:
                node[p] = dict(node[p])
                node = node[p]
            node[leaf] = value
        from pydantic import ValidationError

        try:
            return RunConfig.model_validate(_unwrap_secrets(data))
        except ValidationError as exc:
            raise ValueError(f"invalid setting: {validation_line(exc)}") from None


def validation_line(exc) -> str:
    """A pydantic ``ValidationError`` as one line: ``field: what was wrong`` per error, joined by
    ``; `` (the value shown cut short: a 100 KB prompt is not echoed)."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "config"
        msg = str(err.get("msg", "invalid"))
        if msg.startswith("Value error, "):  # our validators' messages name the field and value already
            text = msg.removeprefix("Value error, ")
            parts.append(text if not err.get("loc") or text.startswith(loc.split(".")[0]) else f"{loc}: {text}")
            continue
        got = repr(err.get("input"))
        if loc.startswith("storage"):  # never echo what may be a credential
            got = "a value of type " + type(err.get("input")).__name__
        parts.append(f"{loc}: {msg} (got {got if len(got) <= 60 else got[:57] + '...'})")
    return "; ".join(p.replace("\n", " ") for p in parts)


def check_same_content(config: RunConfig, data: bytes, where: str) -> None:
    """Refuse to resume a run whose run.json (``data``) was written with content-changing settings,
    naming the fields that differ (resuming would mix two datasets under one manifest)."""
    try:
        before = RunConfig.model_validate(json.loads(data)["config"]).content_dict()
    except Exception:  # noqa: BLE001 - an unreadable record is reported as such
        raise ValueError(f"{where} is not a normguide run record; choose another output root or run_id") from None
    diff = sorted(_flat_diff(before, config.content_dict()))
    if diff:
        raise ValueError(
            f"run {config.run_id!r} at {where} was started with different settings ({', '.join(diff)}); "
            "rerun with the original configuration to resume it, or choose another run_id"
        )


def _flat_diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _flat_diff(a.get(k), b.get(k), f"{prefix}{k}.")]
    return [] if a == b else [prefix.rstrip(".")]


def _unwrap_secrets(obj: Any) -> Any:
    if isinstance(obj, SecretStr):
        return obj.get_secret_value()
    if isinstance(obj, dict):
        return {k: _unwrap_secrets(v) for k, v in obj.items()}
    return obj


#: Largest config file read (bytes): a run configuration is a few hundred bytes.
MAX_CONFIG_BYTES = 1_000_000


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases (``*name``, ``<<: *name``): an 11-line file of
    nested aliases expands to 10^9 nodes (a "billion laughs"), and a config needs none."""

    def compose_node(self, parent, index):  # noqa: D102 - PyYAML's hook
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.composer.ComposerError(
                None, None, f"an alias (*{event.anchor}) on line {event.start_mark.line + 1}: aliases and anchors "
                "are not allowed in config files", event.start_mark)
        return super().compose_node(parent, index)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """A PyYAML error as one line: what and where."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None and "line" not in problem:
        problem += f" (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(problem or exc).split())


def load_config(path: str | Path) -> RunConfig:
    """Read a RunConfig from a YAML (.yaml/.yml) or JSON file; errors name the file and field.

    Guards: a regular file of at most :data:`MAX_CONFIG_BYTES`; YAML is read with the safe
    loader (no object tags) and without aliases (no alias bombs)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"config file {str(p)!r} does not exist" if not p.exists() else
                         f"config file {str(p)!r} is not a regular file")
    with p.open("rb") as f:
        raw = f.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        raise ValueError(f"config file {str(p)!r} is larger than {MAX_CONFIG_BYTES:,} bytes; a run configuration is a few hundred")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {str(p)!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    try:
        data = json.loads(text) if p.suffix == ".json" else yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - safe, no aliases
    except json.JSONDecodeError as exc:
        raise ValueError(f"config file {str(p)!r} is not valid JSON: {exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"config file {str(p)!r} is not valid YAML: {_yaml_problem(exc)}") from None
    except RecursionError:
        raise ValueError(f"config file {str(p)!r} is nested too deeply") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(p)!r} must hold a mapping of settings, got {type(data).__name__}")
    from pydantic import ValidationError

    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"config file {str(p)!r} is invalid: {validation_line(exc)}") from None
