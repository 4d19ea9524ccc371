"""An output root on a local directory, with atomic writes by rename."""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from normguide.data.storage.base import WRITE_CHECK_NAME, Storage, as_bytes, batched
from normguide.data.storage.errors import StorageError
from normguide.data.storage.retry import RETRY_SECONDS
from normguide.data.storage.uris import TMP_SUFFIX, check_key, local_path

__all__ = ["LocalStorage"]


class LocalStorage(Storage):
    """A local directory. Writes go to a temporary file in the same directory, then
    ``os.replace``: a reader sees the old object or the new one, never a partial one, and a
    crashed write leaves at most a ``.*.normguide-tmp`` file that listings ignore."""

    def __init__(self, root: str, *, retry_seconds: float = RETRY_SECONDS) -> None:
        path = local_path(root)
        self.root = path.rstrip("/") or "/"
        self.retry_seconds = retry_seconds

    def _path(self, key: str) -> str:
        return self.uri(key)

    def exists(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def _children_sizes(self, parent: str) -> dict[str, int]:
        directory = os.path.join(self.root, parent) if parent else self.root
        found: dict[str, int] = {}
        try:
            with os.scandir(directory) as it:
                for e in it:
                    if e.is_file() and not e.name.endswith(TMP_SUFFIX):
                        try:
                            found[f"{parent}/{e.name}" if parent else e.name] = e.stat().st_size
                        except FileNotFoundError:  # removed while listing
                            pass
        except (FileNotFoundError, NotADirectoryError):
            return {}
        return found

    def read_bytes(self, key: str) -> bytes:
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, f"object not found: {path}", path) from None
        except IsADirectoryError:
            raise FileNotFoundError(errno.ENOENT, f"object not found: {path} is a directory", path) from None

    def write_bytes(self, key: str, data: bytes) -> str:
        path = self._path(key)
        data = as_bytes(key, data)
        directory, name = os.path.split(path)
        tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
        try:
            os.makedirs(directory, exist_ok=True)
            # O_EXCL on a fresh name; mode 0o666 & umask like any created file (mkstemp's 0600
            # would make the dataset unreadable to other users after the rename).
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
            except BaseException:
                os.unlink(tmp)
                raise
            os.replace(tmp, path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        return path

    def write_many(self, items: Iterable[tuple[str, bytes]], *, batch_size: int = 64) -> list[str]:
        """Write many objects with a thread pool, ``batch_size`` at a time (the iterable is
        consumed one batch at a time, so memory stays bounded). Returns URIs in input order."""
        self._check_batch_size(batch_size)
        uris: list[str] = []
        with ThreadPoolExecutor(max_workers=min(batch_size, 8), thread_name_prefix="normguide-write") as pool:
            for batch in batched(items, batch_size):
                checked = [(check_key(k), as_bytes(k, d)) for k, d in batch]
                # The last value of a repeated key wins, as if written one after the other.
                last = dict(checked)
                list(pool.map(lambda kv: self.write_bytes(*kv), last.items()))
                uris.extend(self.uri(k) for k, _ in checked)
        return uris

    def list(self, prefix: str = "") -> list[str]:
        """Keys under ``prefix`` (a directory-like prefix: 'images/c1' lists 'images/c1/...'),
        sorted, relative to the root."""
        check_key(prefix, allow_empty=True, allow_trailing_slash=True)
        prefix = prefix.rstrip("/")
        top = os.path.join(self.root, prefix) if prefix else self.root
        keys: list[str] = []
        for dirpath, _dirs, files in os.walk(top):
            rel = os.path.relpath(dirpath, self.root)
            for name in files:
                if not name.endswith(TMP_SUFFIX):
                    keys.append(name if rel == "." else f"{rel}/{name}".replace(os.sep, "/"))
        return sorted(keys)

    def delete(self, keys: Iterable[str]) -> None:
        for key in keys:
            try:
                os.remove(self._path(key))
            except FileNotFoundError:
                pass

    def check_writable(self) -> None:
        """Create the root if needed and write and remove a probe file; ValueError if not."""
        try:
            os.makedirs(self.root, exist_ok=True)
        except FileExistsError:
            raise ValueError(f"output root {self.root!r} exists and is not a directory") from None
        except OSError as exc:
            raise ValueError(f"cannot create output root {self.root!r}: {exc.strerror or exc}") from None
        if not os.path.isdir(self.root):
            raise ValueError(f"output root {self.root!r} exists and is not a directory")
        probe = os.path.join(self.root, f"{WRITE_CHECK_NAME}-{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
        try:
            with open(probe, "wb"):
                pass
        except OSError as exc:
            raise ValueError(f"output root {self.root!r} is not writable: {exc.strerror or exc}") from None
        finally:
            try:
                os.unlink(probe)
            except OSError:
                pass

    # -- lease primitives (normguide.data.storage.lease) -----------------------------------------
    # Creation links a complete temporary file to the name (atomic, fails if it exists); every
    # operation runs under flock on the lease's directory, so a takeover, renewal or release
    # sees the bytes it compares against and no other writer in between. The version is the
    # bytes themselves (they hold a unique owner token and the expiry).
    @contextlib.contextmanager
    def _dir_lock(self, path: str) -> Iterator[None]:
        import fcntl

        directory = os.path.dirname(path)
        os.makedirs(directory, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def _write_tmp(self, path: str, data: bytes) -> str:
        directory, name = os.path.split(path)
        tmp = os.path.join(directory, f".{name}.{uuid.uuid4().hex[:12]}{TMP_SUFFIX}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    @staticmethod
    def _read_or_none(path: str) -> bytes | None:
        try:
            with open(path, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def _lease_create(self, key: str, data: bytes) -> tuple[bool, Any]:
        path = self._path(key)
        try:
            with self._dir_lock(path):
                tmp = self._write_tmp(path, data)
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False, None
                finally:
                    os.unlink(tmp)
        except OSError as exc:
            raise StorageError(f"cannot create lease {path}: {exc.strerror or exc}") from exc
        return True, data

    def _lease_read(self, key: str) -> tuple[bytes, Any] | None:
        path = self._path(key)
        try:
            data = self._read_or_none(path)
        except OSError as exc:
            raise StorageError(f"cannot read lease {path}: {exc.strerror or exc}") from exc
        return None if data is None else (data, data)

    def _lease_replace(self, key: str, data: bytes, version: Any) -> tuple[bool, Any]:
        path = self._path(key)
        try:
            with self._dir_lock(path):
                if self._read_or_none(path) != version:
                    return False, None
                os.replace(self._write_tmp(path, data), path)
        except OSError as exc:
            raise StorageError(f"cannot write lease {path}: {exc.strerror or exc}") from exc
        return True, data

    def _lease_delete(self, key: str, version: Any) -> bool:
        path = self._path(key)
        try:
            with self._dir_lock(path):
                if self._read_or_none(path) != version:
                    return False
                os.unlink(path)
        except OSError as exc:
            raise StorageError(f"cannot remove lease {path}: {exc.strerror or exc}") from exc
        return True
