"""normguide: synthetic image datasets of rare concepts from norm-guided (NAO) diffusion seeds.

Layers, bottom up (each imports only from those below it; ``lint-imports`` checks it, see
docs/architecture.md): ``normguide.errors`` (the error family), ``normguide.geometry`` (pure
torch maths), ``normguide.diffusion`` (model loading, DDIM inversion, generation),
``normguide.data`` (the run's layout, concept table, seed plans, seeds files, manifest,
storage), ``normguide.demo`` (the trained demo model's data and judge), ``normguide.evaluation``,
``normguide.config`` (the run configuration), ``normguide.export`` and ``normguide.reporting``
(of a finished run), ``normguide.pipeline`` (one run's steps and the local driver, no Prefect)
and ``normguide.cli``. The Prefect tasks, flows and deployments sit on top.
"""

# pyarrow before torch, always: a process that imports torch first and then reads Parquet can
# abort at exit ("terminate called without an active exception", exit 134; measured 9 of 30
# runs the other way round, 0 of 30 this way). Every normguide entry point imports this package.
import pyarrow  # noqa: F401, E402  (import order matters; see above)

__version__ = "0.1.0"
