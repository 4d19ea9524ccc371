"""normguide: synthetic image datasets of rare concepts from norm-guided (NAO) diffusion seeds.

Layers (each imports only from those above it): ``normguide.geometry`` (pure torch maths),
``normguide.diffusion`` (pipelines, demo model, DDIM inversion, generation), ``normguide.data``
(concept table, seed plans, manifest, storage), ``normguide.config`` (the run configuration),
``normguide.run`` (one run's steps, no Prefect) and ``normguide.cli``.
"""

# pyarrow before torch, always: a process that imports torch first and then reads Parquet can
# abort at exit ("terminate called without an active exception", exit 134; measured 9 of 30
# runs the other way round, 0 of 30 this way). Every normguide entry point imports this package.
import pyarrow  # noqa: F401, E402  (import order matters; see above)

__version__ = "0.1.0"
