"""A concept's seeds file, ``seeds/<concept_id>.safetensors``: the one type that reads and writes it.

Tensors (float32, seed shape ``(C, h, w)``):

    inverted            (K, C, h, w)  DDIM inversions of the K reference images, in reference order
    planned             (N, C, h, w)  the planned seeds, row-aligned with ``meta["plan"]``
    centroid.<method>   (C, h, w)     each geometric method's centroid
    refined             (N, C, h, w)  SeedSelect-refined seeds, row-aligned with ``planned`` (only
                                      with refinement on; rows not refined yet equal ``planned``)

Metadata (one canonical-JSON value under the safetensors header key ``normguide``): concept_id,
num_seeds, reference_uris, prompt, reconstruction_error (per seed or null), model,
model_revision, inversion_steps, inversion_guidance, seed_shape, ``health`` (one seed-health record
per inverted seed, derived from ``inverted`` when the file is written: ``SeedsFile.health``), and
after planning ``plan`` (the
rows of :class:`normguide.data.plan.PlannedSeed` as dicts), and with refinement ``refine``:
``{"config": <the refine settings>, "rows": [per planned row: None (not refined yet) or its
record: preset, iterations, losses at start and end, fallback]}``.

The file is written after inversion (the expensive step's checkpoint) and once more with the
plan; identical content gives identical bytes (safetensors keeps header metadata in a hash map
whose order varies, so everything goes into one JSON key with sorted keys).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from normguide.data import layout
from normguide.data.plan import PlannedSeed, SeedPlan

META_KEY = "normguide"


seeds_key = layout.seeds_key  # the key lives in normguide.data.layout


@dataclass(frozen=True)
class SeedsFile:
    """The content of one concept's seeds file (see module docstring)."""

    inverted: torch.Tensor
    meta: dict[str, Any]
    planned: torch.Tensor | None = None
    centroids: dict[str, torch.Tensor] = field(default_factory=dict)
    refined: torch.Tensor | None = None

    @property
    def concept_id(self) -> str:
        return self.meta["concept_id"]

    @property
    def num_seeds(self) -> int:
        return int(self.inverted.shape[0])

    @property
    def has_plan(self) -> bool:
        return self.planned is not None and "plan" in self.meta

    @property
    def plan_rows(self) -> list[PlannedSeed]:
        if not self.has_plan:
            raise ValueError(f"concept {self.concept_id!r}: seeds file has no plan yet")
        return [PlannedSeed.from_dict(r) for r in self.meta["plan"]]

    @property
    def refine_rows(self) -> list[dict | None] | None:
        """Per planned row its refinement record (None: not refined yet); None without refinement."""
        state = self.meta.get("refine")
        return None if state is None else state["rows"]

    @property
    def is_refined(self) -> bool:
        """Every planned row has been refined."""
        rows = self.refine_rows
        return self.refined is not None and rows is not None and all(r is not None for r in rows)

    @property
    def generation_seeds(self) -> torch.Tensor:
        """The seeds images are generated from: the refined ones once every row is refined, else
        the planned ones."""
        return self.refined if self.is_refined else self.planned

    def with_refinement(self, refined: torch.Tensor, config: dict, rows: list[dict | None]) -> SeedsFile:
        """A copy holding (partly) refined seeds and their records."""
        return replace(self, refined=refined.contiguous(), meta=dict(self.meta, refine={"config": config, "rows": rows}))

    def without_refinement(self) -> SeedsFile:
        meta = {k: v for k, v in self.meta.items() if k != "refine"}
        return replace(self, refined=None, meta=meta)

    @property
    def reconstruction_errors(self) -> list[float] | None:
        return self.meta.get("reconstruction_error")

    def health(self) -> list[dict]:
        """One seed-health record per inverted seed (``normguide.geometry.health.seed_health``:
        norm z-score, per-channel mean and variance, multi-scale auto-correlation, round-trip
        error where the inversion measured it); written into the file's metadata as ``health``."""
        if self.inverted.shape[0] == 0:
            return []
        from normguide.geometry.health import seed_health

        errors = self.reconstruction_errors
        return seed_health(self.inverted, errors if errors and len(errors) == self.inverted.shape[0] else None)

    def with_plan(self, plan: SeedPlan) -> SeedsFile:
        """A copy holding ``plan`` (planned seeds, centroids and plan rows)."""
        return replace(
            self,
            planned=plan.seeds.contiguous(),
            centroids={m: c.contiguous() for m, c in plan.centroids.items()},
            meta=dict(self.meta, plan=[r.to_dict() for r in plan.rows]),
        )

    # -- bytes --------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        tensors = {"inverted": self.inverted.contiguous()}
        if self.planned is not None:
            tensors["planned"] = self.planned.contiguous()
        tensors.update({f"centroid.{m}": c.contiguous() for m, c in self.centroids.items()})
        if self.refined is not None:
            tensors["refined"] = self.refined.contiguous()
        meta = dict(self.meta, health=self.health())  # derived from the tensors: always current
        return st_save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True)})

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str = "seeds file") -> SeedsFile:
        """Parse a seeds file; ``ValueError`` naming ``where`` if it is not one."""
        try:
            tensors = st_load(data)
            # safetensors layout: 8-byte little-endian header length, then the JSON header
            n = int.from_bytes(data[:8], "little")
            header = json.loads(data[8 : 8 + n]).get("__metadata__") or {}
            meta = json.loads(header[META_KEY])
            inverted = tensors["inverted"]
        except Exception as exc:  # noqa: BLE001 - any parse failure means a damaged file
            raise ValueError(f"{where} is not a readable normguide seeds file ({type(exc).__name__}: {exc})") from None
        centroids = {k.split(".", 1)[1]: v for k, v in tensors.items() if k.startswith("centroid.")}
        return cls(inverted=inverted, meta=meta, planned=tensors.get("planned"), centroids=centroids,
                   refined=tensors.get("refined"))
