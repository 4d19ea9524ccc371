"""Where bytes live: reading inputs and writing a run's outputs, on a local directory or S3.

Two kinds of access:

* Inputs (the concept table, reference images) are single URIs: :func:`read_bytes`,
  :func:`exists_uri`. A bad location is a configuration problem, so errors are ``ValueError``
  or ``FileNotFoundError`` naming the URI (and, for S3, the endpoint and what was wrong).
* Outputs go under one root (``/abs/dir`` or ``s3://bucket/prefix``): :class:`Storage`, a
  key-value store of bytes with atomic single writes, batched concurrent writes, listings,
  and a :meth:`Storage.check_writable` to run before any GPU work.

The S3 endpoint and credentials come from a :class:`normguide.config.StorageConfig`, passed as
``storage_config=`` (:func:`storage_options_for` turns it into fsspec options).

Modules, by concern (each one's docstring explains its part):

* :mod:`.uris` - allowed schemes, key rules, local paths and ``s3://`` URIs taken apart;
* :mod:`.options` - fsspec options and credentials from a StorageConfig; secrets kept out of messages;
* :mod:`.errors` - :class:`StorageError`, what an S3 failure means, one-line descriptions;
* :mod:`.retry` - retry budgets, backoff with jitter, the retry loop;
* :mod:`.base` - the :class:`Storage` interface and :meth:`Storage.open`;
* :mod:`.local` - :class:`LocalStorage`, atomic writes by rename;
* :mod:`.s3` - S3 filesystems per process (fork and thread safety), :class:`S3Storage`;
* :mod:`.inputs` - :func:`read_bytes` and :func:`exists_uri` for single input URIs;
* :mod:`.lease` - :meth:`Storage.acquire_lease`: one live run per output root, a crashed run's
  lease expiring (:class:`Lease`, :class:`LeaseHeld`, :class:`LeaseLost`).

Only the names below are the public API; the modules' other names serve this package.
"""

from normguide.data.storage.base import Storage
from normguide.data.storage.errors import StorageError
from normguide.data.storage.inputs import exists_uri, read_bytes
from normguide.data.storage.lease import LEASE_NAME, LEASE_TTL_S, Lease, LeaseDamaged, LeaseHeld, LeaseLost
from normguide.data.storage.local import LocalStorage
from normguide.data.storage.options import storage_options_for
from normguide.data.storage.retry import INPUT_RETRY_SECONDS, RETRY_SECONDS
from normguide.data.storage.s3 import S3Storage
from normguide.data.storage.uris import check_key, check_uri_scheme

__all__ = [
    "RETRY_SECONDS",
    "INPUT_RETRY_SECONDS",
    "LEASE_NAME",
    "LEASE_TTL_S",
    "Lease",
    "LeaseDamaged",
    "LeaseHeld",
    "LeaseLost",
    "Storage",
    "LocalStorage",
    "S3Storage",
    "StorageError",
    "check_key",
    "check_uri_scheme",
    "exists_uri",
    "read_bytes",
    "storage_options_for",
]
