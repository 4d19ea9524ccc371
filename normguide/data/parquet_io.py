"""Reading Parquet bytes without leaving Arrow work that needs Python at exit.

``pyarrow.parquet.read_table`` on a Python file object (``io.BytesIO(data)``, which
``pandas.read_parquet`` also hands it) returns before all of its background work is done: the
read-ahead futures on Arrow's thread pool still hold buffers that wrap Python objects, and the
last one is released on an Arrow worker thread. When that happens after the interpreter began
to finalize (the command has printed its summary and is exiting), the buffer's destructor asks
for the GIL, the thread is made to exit inside a C++ destructor, and the process aborts with
``terminate called without an active exception`` (SIGABRT, exit 134): apache/arrow#33975 and
#49942. Measured here: 2 of 150 runs of a script that reads a 4-row manifest that way and exits.

Every Parquet read in normguide goes through :func:`read_table`: the bytes are first copied into
an Arrow-owned buffer (one memcpy, in the calling thread), so no buffer Arrow holds wraps a
Python object and nothing on its threads needs the GIL. ``tests/cli/test_exit_codes.py`` checks that
no module reads Parquet another way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["arrow_buffer", "read_frame", "read_metadata", "read_table", "release_unused_memory"]


def arrow_buffer(data: bytes) -> pa.Buffer:
    """``data`` copied into a buffer that Arrow owns (no reference to a Python object)."""
    sink = pa.BufferOutputStream()
    sink.write(data)
    return sink.getvalue()


def read_table(data: bytes, **kwargs: Any) -> pa.Table:
    """Parquet ``data`` as a table (``kwargs`` go to ``pyarrow.parquet.read_table``)."""
    return pq.read_table(pa.BufferReader(arrow_buffer(data)), **kwargs)


def read_frame(data: bytes, **kwargs: Any) -> pd.DataFrame:
    """Parquet ``data`` as a pandas DataFrame (what ``pandas.read_parquet`` returns)."""
    return read_table(data, **kwargs).to_pandas()


def read_metadata(data: bytes) -> pq.FileMetaData:
    """The Parquet footer of ``data`` (row counts, key-value metadata)."""
    return pq.ParquetFile(pa.BufferReader(arrow_buffer(data))).metadata


def release_unused_memory() -> None:
    """Hand back to the OS the memory Arrow's pool keeps cached after a large table was built,
    read or written. pyarrow's default pool on Linux (mimalloc) keeps it for reuse: measured,
    ~12 MiB resident after writing a 3,000-row manifest part and ~16 MiB after reading one, held
    to the end of the process (benchmarks/README.md, run_memory.py); called after the manifest's
    large operations. A no-op costing well under a microsecond when nothing is cached."""
    pa.default_memory_pool().release_unused()
