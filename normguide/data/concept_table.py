"""The run's concept table, read once: :class:`TableSnapshot` (where it came from, its content
digest, its validated rows).

A run reads its table exactly once, before anything else, and hands the snapshot on: the digest
names the run (``RunConfig.run_id_for``) and is recorded in run.json, the rows are the concepts
the steps work on. A table changed while the run goes on does not change the run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from normguide.data.schema import Concept, ConceptTable, ConceptTableError, parse_concept_table, table_digest
from normguide.data.storage import check_uri_scheme, read_bytes

if TYPE_CHECKING:
    from normguide.config import StorageConfig

__all__ = ["TableSnapshot"]


@dataclass(frozen=True)
class TableSnapshot:
    """One read of a concept table.

    Attributes:
        source: the table's path or URI, as configured.
        digest: sha256 of its rows (``normguide.data.schema.table_digest``): reference paths as
            written, in concept_id order, so the same table read from elsewhere has the same digest.
        concepts: its validated rows (empty when it is invalid).
        problems: why it is invalid (every schema violation); :meth:`select` raises them, so a
            bad table is reported where the concepts are first needed, after the output checks.
    """

    source: str
    digest: str
    concepts: tuple[Concept, ...] = ()
    problems: tuple[str, ...] = ()

    @classmethod
    def read(cls, source: str, *, storage_config: StorageConfig | None = None, limits=None,
             template: str | None = None) -> TableSnapshot:
        """Read and validate the table at ``source`` (a local path or s3:// URI): one read.

        Raises:
            ValueError: a scheme that is not supported, or the table does not exist (named),
                or it cannot be read (access denied, endpoint unreachable).
        """
        check_uri_scheme(source, field="concepts")
        try:
            data = read_bytes(source, storage_config=storage_config)
        except FileNotFoundError as exc:
            why = f" ({exc.strerror})" if "://" in source and exc.strerror else ""  # bucket, endpoint
            raise ValueError(f"concepts: concept table {source!r} does not exist{why}") from None
        return cls.from_bytes(data, source=source, limits=limits, template=template)

    @classmethod
    def from_bytes(cls, data: bytes, *, source: str, limits=None, template: str | None = None) -> TableSnapshot:
        """The snapshot of a table's Parquet bytes (relative reference paths resolve against
        ``source``'s folder); an invalid table gives a snapshot that holds its problems. ``limits``
        and ``template`` are as in :func:`normguide.data.schema.parse_concept_table`."""
        try:
            rows = tuple(parse_concept_table(data, source=source, limits=limits, template=template).concepts)
        except ConceptTableError as exc:
            return cls(source=source, digest=table_digest(data), problems=tuple(exc.problems))
        return cls(source=source, digest=table_digest(data), concepts=rows)

    def select(self, concept_ids: list[str] | None = None) -> list[Concept]:
        """The rows of ``concept_ids`` in that order (all rows for None).

        Raises:
            ConceptTableError: the table is invalid (every problem listed).
            ValueError: an id that is not in the table (named).
        """
        if self.problems:
            raise ConceptTableError(self.source, list(self.problems))
        return ConceptTable(self.source, list(self.concepts)).select(concept_ids)

    def ids(self) -> list[str]:
        return [c.concept_id for c in self.concepts]
