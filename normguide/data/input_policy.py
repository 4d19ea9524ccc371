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

A deployment bounds every run it executes, whatever the run's configuration says (a flow run's
submitter writes it), with ``NORMGUIDE_ALLOWED_INPUT_ROOTS`` (the table and every reference must
also lie under one of these) and ``NORMGUIDE_ALLOWED_OUTPUT_ROOTS`` (the run's output root).

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

__all__ = ["INPUT_ROOTS_ENV", "OUTPUT_ROOTS_ENV", "InputPolicy", "check_input_allowed", "check_output_allowed",
           "input_policy"]

#: Set in a deployment's (or worker's) environment, these bound what any run there may read and
#: write, whatever its configuration (which a flow run's submitter controls) says.
INPUT_ROOTS_ENV = "NORMGUIDE_ALLOWED_INPUT_ROOTS"
OUTPUT_ROOTS_ENV = "NORMGUIDE_ALLOWED_OUTPUT_ROOTS"

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


def _env_roots(name: str) -> tuple[_Root, ...] | None:
    """The roots in environment variable ``name`` (separated by commas or whitespace); None when
    it is unset. A set but empty variable allows nothing."""
    from normguide.data.storage.uris import check_output_root

    value = os.environ.get(name)
    if value is None:
        return None
    roots = [r for r in value.replace(",", " ").split() if r]
    for r in roots:
        check_output_root(r, field=f"environment variable {name}")
    return tuple(_Root.parse(r) for r in roots)


@dataclass(frozen=True)
class InputPolicy:
    """The roots a run's references must lie under; ``roots`` None: anywhere (a local table
    without ``storage.allowed_input_roots``)."""

    roots: tuple[_Root, ...] | None
    origin: str = ""  # where the roots come from, for the message
    #: The deployment's bound (``NORMGUIDE_ALLOWED_INPUT_ROOTS``): a reference must lie under
    #: one of these as well; None: no bound.
    caps: tuple[_Root, ...] | None = None

    @classmethod
    def for_table(cls, table_uri: str, allowed_roots: Sequence[str] | None) -> InputPolicy:
        caps = _env_roots(INPUT_ROOTS_ENV)
        if allowed_roots:
            return cls(tuple(_Root.parse(r) for r in allowed_roots), "storage.allowed_input_roots", caps)
        if is_s3(table_uri):
            return cls((_Root.parse(_table_folder(table_uri)),),
                       "the default for a remote concept table: its own folder", caps)
        return cls(_EVERYWHERE, "", caps)

    def allows(self, uri: str) -> bool:
        return ((self.roots is None or any(r.contains(uri) for r in self.roots))
                and (self.caps is None or any(r.contains(uri) for r in self.caps)))

    def refusal(self, uri: str, *, concept_id: str, field: str = "reference_uris") -> str:
        """The one message for a refused reference (the same whether or not it exists, and
        whichever bound refused it)."""
        where = []
        if self.roots is not None:
            where.append(", ".join(repr(r.text) for r in self.roots) + f": {self.origin}")
        if self.caps is not None:
            where.append((", ".join(repr(r.text) for r in self.caps) or "none") + f": this deployment's {INPUT_ROOTS_ENV}")
        return (f"concept {concept_id!r}, {field}: {uri!r} is not under an allowed input root ({'; and '.join(where)}); "
                "a run reads references only there, never other files of the machine that runs it: move the image "
                "under that root or add a root to storage.allowed_input_roots")

    def problems(self, concepts: Sequence) -> list[str]:
        """The refusal of every reference of ``concepts`` outside the roots, in table order."""
        if self.roots is None and self.caps is None:
            return []
        return [self.refusal(uri, concept_id=c.concept_id) for c in concepts for uri in c.reference_uris
                if not self.allows(uri)]


def input_policy(config) -> InputPolicy:
    """The policy of a :class:`~normguide.config.RunConfig`'s table and storage settings."""
    return InputPolicy.for_table(config.concepts, config.storage.allowed_input_roots)


def _check_under(env: str, uri: str, message) -> str:
    """``uri`` if ``env``'s roots (unset: anything) hold it, else a ``ValueError`` of
    ``message(allowed roots)``."""
    caps = _env_roots(env)
    if caps is not None and not any(r.contains(uri) for r in caps):
        raise ValueError(message(", ".join(repr(r.text) for r in caps) or "none"))
    return uri


def check_input_allowed(uri: str, *, field: str) -> str:
    """``uri`` (an input the configuration names: the concept table) if the deployment's
    ``NORMGUIDE_ALLOWED_INPUT_ROOTS`` allows it (unset: anything), else a ``ValueError`` naming
    ``field``; nothing is read first."""
    return _check_under(INPUT_ROOTS_ENV, uri, lambda allowed: f"{field}: {uri!r} is not under an allowed input "
                        f"root ({allowed}: this deployment's {INPUT_ROOTS_ENV})")


def check_output_allowed(root: str) -> str:
    """``root`` (a run's output root) if the deployment allows it, else a ``ValueError`` naming
    it and ``NORMGUIDE_ALLOWED_OUTPUT_ROOTS`` (unset: any output is allowed)."""
    return _check_under(OUTPUT_ROOTS_ENV, root, lambda allowed: f"output: {root!r} is not under an allowed output "
                        f"root ({allowed}: this deployment's {OUTPUT_ROOTS_ENV}); write the run under one of them")
