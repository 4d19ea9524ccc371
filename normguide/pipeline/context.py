"""The run context: everything a step needs, built once per run (or once per Prefect task).

A step never looks anything up by itself: the settings, the concept table (read once per run),
the output store, the model and the input reader come from the :class:`RunContext` it is handed. The defaults suit a normal run (the output root of the
config, the process-wide model cache); a test or a library user injects their own store or an
already loaded model instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from normguide.config import RunConfig
from normguide.data.concept_table import TableSnapshot
from normguide.data.storage import Storage, read_bytes
from normguide.data.storage.uris import is_s3, local_path

if TYPE_CHECKING:
    from PIL import Image

    from normguide.data.schema import Concept
    from normguide.diffusion import LoadedModel

ModelProvider = Callable[[], "LoadedModel"]


def read_table(config: RunConfig) -> TableSnapshot:
    """The config's concept table, read once (``TableSnapshot.read``), if the deployment allows
    reading it (``NORMGUIDE_ALLOWED_INPUT_ROOTS``, :mod:`normguide.data.input_policy`)."""
    from normguide.data.input_policy import check_input_allowed

    check_input_allowed(config.concepts, field="concepts")
    return TableSnapshot.read(config.concepts, storage_config=config.storage, limits=config.limits,
                              template=config.prompt_template)


def output_root(config: RunConfig, table: TableSnapshot | None = None) -> str:
    """``<output>/<run_id>``: where the run's files go (an s3:// URI, or an absolute local path:
    a relative ``output`` or a ``file://`` URI is resolved against the current directory). A
    config without a ``run_id`` needs its table's digest: ``table``, or the table read now."""
    from normguide.data.input_policy import check_output_allowed  # the deployment's bound, if any

    root = config.output if is_s3(config.output) else local_path(config.output)
    return check_output_allowed(f"{root.rstrip('/')}/{resolved_run_id(config, table)}")


def resolved_run_id(config: RunConfig, table: TableSnapshot | None = None) -> str:
    """The run id: ``config.run_id``, else derived from the settings and the table's digest
    (``table``, or the table read now)."""
    if config.run_id:
        return config.run_id
    return config.run_id_for((table or read_table(config)).digest)


def cached_model_provider(config: RunConfig) -> ModelProvider:
    """Loads the config's model on first use, shared per process (``get_pipeline``'s cache), so
    a worker that runs many tasks loads it once."""

    def provide() -> LoadedModel:
        from normguide.diffusion import GpuRecipe, get_pipeline

        return get_pipeline(config.model, device=config.device, dtype=config.dtype, compile=config.compile,
                            recipe=GpuRecipe(**config.gpu.model_dump()))

    return provide


@dataclass
class RunContext:
    """One run's configuration and resources.

    Attributes:
        config: the run configuration, pinned (its ``run_id`` is set).
        table: the concept table, read once for the run (on first use when the context was
            made from a pinned config without one: commands on a finished run never need it).
        storage: the run's output store (``<output>/<run_id>``).
        model_provider: returns the run's model; called at most once per context, and only by
            steps that need the model (a complete concept or run never loads it).
    """

    config: RunConfig
    storage: Storage
    model_provider: ModelProvider
    _table: TableSnapshot | None = field(default=None, repr=False)
    _model: LoadedModel | None = field(default=None, init=False, repr=False)

    @classmethod
    def create(cls, config: RunConfig, *, table: TableSnapshot | None = None, storage: Storage | None = None,
               model: LoadedModel | ModelProvider | None = None) -> RunContext:
        """A context for ``config``, pinned to ``table`` (the run's concept table; a config
        without a ``run_id`` has it read now, to name the run); ``storage`` and ``model``
        replace the defaults when given."""
        if table is None and not config.run_id:
            table = read_table(config)
        if table is not None:
            config = config.pinned(table.digest)
        if storage is None:
            storage = Storage.open(output_root(config), storage_config=config.storage,
                                   retry_seconds=config.storage.retry_seconds)
        if model is None:
            provider = cached_model_provider(config)
        elif callable(model):
            provider = model
        else:
            provider = lambda: model  # noqa: E731 - an already loaded model
        return cls(config=config, storage=storage, model_provider=provider, _table=table)

    @property
    def table(self) -> TableSnapshot:
        if self._table is None:
            self._table = read_table(self.config)
        return self._table

    @property
    def run_id(self) -> str:
        return self.config.run_id

    def model(self) -> LoadedModel:
        if self._model is None:
            self._model = self.model_provider()
        return self._model

    def read_input(self, uri: str) -> bytes:
        """Bytes of an input (concept table, reference image): a local path or s3:// URI."""
        return read_bytes(uri, storage_config=self.config.storage)


def check_lease(ctx: RunContext, *, finalizing: bool = False) -> None:
    """Before a write: raise ``LeaseLost`` if this process's lease on the run root was lost
    (one read of the lease object); ``finalizing`` upgrades a subset's claim to every concept
    (``LeaseHeld`` while another writer is live). No lease held in this process: no check."""
    from normguide.data.storage.lease import check_held

    check_held(ctx.storage, finalizing=finalizing)


def read_references(ctx: RunContext, concept: Concept) -> list[Image.Image]:
    """The concept's reference images, decoded; every bad one of the concept is named in one
    :class:`ReferenceImageError` (:func:`normguide.data.references.read_references`)."""
    from normguide.data import references as reference_io
    from normguide.data.input_policy import input_policy

    return reference_io.read_references(ctx.read_input, concept, policy=input_policy(ctx.config))
