"""Shards of a concept table: how a large run is split across GPU workers.

A shard is a named, contiguous slice of the concept table (table order). Names are stable for
a given table and shard size, so a rerun talks about the same shards as the run it repairs.

Whether a concept is done is decided elsewhere, by its manifest part in storage
(:func:`normguide.run.missing_parts`); this module only combines those answers into "which
shards still have work". It has no Prefect and no IO, so a team that orchestrates shards with
another tool (a Slurm array, a Kubernetes Indexed Job) uses the same split.

Sizing (see deployments/README.md): with ``G`` GPU workers and ``C`` concepts, aim for a few
waves of shards, ``ceil(C / (G * waves))`` concepts each (:func:`suggest_shard_size`), so one
slow shard does not leave the other GPUs idle at the end, while each shard still runs long
enough to amortise its flow run start and model load.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Shard:
    """One slice of the concept table, run as one flow run of the generation deployment.

    Attributes:
        index: 0-based position among the run's shards.
        total: Number of shards the table was split into.
        concept_ids: The concepts this shard (still) has to produce, in table order.
    """

    index: int
    total: int
    concept_ids: tuple[str, ...]

    @property
    def name(self) -> str:
        """``shard-003-of-010``: zero-padded so names sort in table order."""
        width = max(3, len(str(self.total)))
        return f"shard-{self.index + 1:0{width}d}-of-{self.total:0{width}d}"


def split_into_shards(concept_ids: Sequence[str], shard_size: int) -> list[Shard]:
    """Split concept ids, in table order, into contiguous shards of at most ``shard_size``.

    Shard ``i`` holds ``concept_ids[i * shard_size : (i + 1) * shard_size]``; the last one may
    be shorter. An empty table gives no shards.

    Raises:
        ValueError: ``shard_size`` is not a positive integer, or a concept id repeats.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {shard_size!r}")
    ids = list(concept_ids)
    seen: set[str] = set()
    repeated = sorted({c for c in ids if c in seen or seen.add(c)})
    if repeated:
        raise ValueError(f"concept_ids must be unique, got repeats: {repeated}")
    total = math.ceil(len(ids) / shard_size)
    return [
        Shard(index=i, total=total, concept_ids=tuple(ids[i * shard_size : (i + 1) * shard_size]))
        for i in range(total)
    ]


def pending_shards(shards: Sequence[Shard], missing_concept_ids: Iterable[str]) -> list[Shard]:
    """The shards that still have work, each narrowed to its missing concepts.

    A shard is done when none of its concepts is missing (every concept has its manifest
    part). A shard that failed half-way keeps its name but carries only the concepts that
    still lack a part, so a rerun redoes only the failed or missing work.
    """
    missing = set(missing_concept_ids)
    pending = []
    for shard in shards:
        todo = tuple(c for c in shard.concept_ids if c in missing)
        if todo:
            pending.append(replace(shard, concept_ids=todo))
    return pending


def suggest_shard_size(num_concepts: int, num_gpus: int, *, waves: int = 3) -> int:
    """``ceil(num_concepts / (num_gpus * waves))``, at least 1.

    ``waves`` is how many shards each GPU processes one after the other on average: 1 gives
    the fewest flow runs (one model load per GPU) but the longest tail when shards differ in
    cost; 2 to 4 balance the two.

    Raises:
        ValueError: a count is negative or ``num_gpus``/``waves`` is below 1.
    """
    if num_concepts < 0:
        raise ValueError(f"num_concepts must be >= 0, got {num_concepts}")
    if num_gpus < 1:
        raise ValueError(f"num_gpus must be >= 1, got {num_gpus}")
    if waves < 1:
        raise ValueError(f"waves must be >= 1, got {waves}")
    return max(1, math.ceil(num_concepts / (num_gpus * waves)))
