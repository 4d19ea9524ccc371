"""The data layer: concept-table schema, seed plans, manifest, and storage (fsspec)."""
