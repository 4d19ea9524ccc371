"""normguide: synthetic image datasets of rare concepts from norm-guided (NAO) diffusion seeds.

Layers (each imports only from those above it): ``normguide.geometry`` (pure torch maths),
``normguide.diffusion`` (pipelines, demo model, DDIM inversion, generation), ``normguide.data``
(concept table, seed plans, manifest, storage), ``normguide.config`` (the run configuration),
``normguide.run`` (one run's steps, no Prefect) and ``normguide.cli``.
"""

__version__ = "0.1.0"
