"""Which reference images a run may read: the input policy (issue 25).

A concept table names its reference images, and the machine that runs the table reads them. A
table written by someone else (a remote table, run by a Prefect worker) must not make that
machine read its own files, or another bucket's, into a dataset. So:

* a run whose concept table is **remote** (``s3://``) reads references only under its
  **allowed input roots**: ``storage.allowed_input_roots`` when set, else the table's own folder
  (its scheme, bucket and prefix: ``s3://bucket/tables/t.parquet`` allows ``s3://bucket/tables/``);
* local paths and ``file://`` URIs (files of the machine that runs the flow) are allowed only
  when a local root in ``storage.allowed_input_roots`` names them;
* a table on **local disk** reads any reference, unless ``storage.allowed_input_roots`` is set,
  which then applies to it as well.

Every refused reference gets the same message, built from the table's text alone: the policy is
checked before any file is touched, so whether the file exists, is a folder or is not an image
never shows. A local reference is compared after its symlinks are resolved; an ``s3://`` key
both as written and with its ``.``/``..`` segments collapsed (S3 keeps ``a/../b`` literally,
other S3 servers collapse it): both must lie under the root.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass

from normguide.data.storage.uris import is_s3, local_path, split_s3

__all__ = ["InputPolicy", "input_policy"]

_EVERYWHERE = None


def _table_folder(table_uri: str) -> str:
    bucket, key = split_s3(table_uri)
    folder = posixpath.dirname(key)
    return f"s3://{bucket}/{folder}/" if folder else f"s3://{bucket}/"


@dataclass(frozen=True)
class _Root:
    text: str  # as configured (or derived), for messages
    bucket: str | None  # None: a local root
    prefix: str  # s3: key prefix ending in "/" or ""; local: the resolved directory

    @classmethod
    def parse(cls, root: str) -> _Root:
        if is_s3(root):
            bucket, key = split_s3(root)
            return cls(root, bucket, f"{key}/" if key else "")
        return cls(root, None, os.path.realpath(local_path(root)))

    def contains(self, uri: str) -> bool:
        if is_s3(uri):
            if self.bucket is None:
                return False
            bucket, key = split_s3(uri)
            collapsed = posixpath.normpath(key) if key else ""
            return bucket == self.bucket and all(k.startswith(self.prefix) and not k.startswith("../") and k != ".."
                                                 for k in (key, collapsed))
        if self.bucket is not None:
            return False
        path = os.path.realpath(local_path(uri))
        return path == self.prefix or path.startswith(self.prefix.rstrip(os.sep) + os.sep)


@dataclass(frozen=True)
class InputPolicy:
    """The roots a run's references must lie under; ``roots`` None: anywhere (a local table
    without ``storage.allowed_input_roots``)."""

    roots: tuple[_Root, ...] | None
    origin: str = ""  # where the roots come from, for the message

    @classmethod
    def for_table(cls, table_uri: str, allowed_roots: Sequence[str] | None) -> InputPolicy:
        if allowed_roots:
            return cls(tuple(_Root.parse(r) for r in allowed_roots), "storage.allowed_input_roots")
        if is_s3(table_uri):
            return cls((_Root.parse(_table_folder(table_uri)),),
                       "the default for a remote concept table: its own folder")
        return cls(_EVERYWHERE)

    def allows(self, uri: str) -> bool:
        return self.roots is None or any(r.contains(uri) for r in self.roots)

    def refusal(self, uri: str, *, concept_id: str, field: str = "reference_uris") -> str:
        """The one message for a refused reference (the same whether or not it exists)."""
        roots = ", ".join(repr(r.text) for r in self.roots or ())
        return (f"concept {concept_id!r}, {field}: {uri!r} is not under an allowed input root ({roots}: {self.origin}); "
                "a run reads references only there, never other files of the machine that runs it: move the image "
                "under that root or add a root to storage.allowed_input_roots")

    def problems(self, concepts: Sequence) -> list[str]:
        """The refusal of every reference of ``concepts`` outside the roots, in table order."""
        if self.roots is None:
            return []
        return [self.refusal(uri, concept_id=c.concept_id) for c in concepts for uri in c.reference_uris
                if not self.allows(uri)]


def input_policy(config) -> InputPolicy:
    """The policy of a :class:`~normguide.config.RunConfig`'s table and storage settings."""
    return InputPolicy.for_table(config.concepts, config.storage.allowed_input_roots)
