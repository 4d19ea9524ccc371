"""Export a finished run to the formats training jobs load: Hugging Face ``datasets`` and WebDataset.

    from normguide.export import export_run
    uris = export_run(storage, ["hf", "webdataset"])   # {"hf": "<run>/hf", "webdataset": "<run>/webdataset"}

Modules:

* :mod:`.source` - the finalized run as input (manifest, images checked against their sha256)
  and the resume rules shared by the formats;
* :mod:`.hf` - Parquet files with embedded images, per method, and the dataset card's YAML
  (:func:`hf_card_yaml`);
* :mod:`.webdataset` - tar shards with a Parquet index and a stats file each;
* :mod:`.cli` - ``normguide export``.

Everything is written through the run's Storage (atomic writes, local or S3) under the run root;
an export is resumable (a killed one, run again, writes what is missing and ends with the same
bytes as an uninterrupted one) and idempotent (a finished one is a single existence check).
Exporting never changes the dataset, so the export settings are not part of the run id.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from normguide.config import DEFAULT_EXPORT_SHARD_SIZE, EXPORT_FORMATS
from normguide.export.hf import hf_card_yaml
from normguide.export.source import open_finished_run, recorded_run_id

if TYPE_CHECKING:
    from normguide.data.storage import Storage

__all__ = ["DEFAULT_EXPORT_SHARD_SIZE", "EXPORT_FORMATS", "export_run", "hf_card_yaml", "load_snippet"]


def export_run(storage: Storage, formats: Sequence[str], *, shard_size: int = DEFAULT_EXPORT_SHARD_SIZE,
               run_id: str | None = None) -> dict[str, str]:
    """Export the finalized run at ``storage`` (its root) to each of ``formats``.

    Args:
        storage: The run's root (the model is never loaded).
        formats: Names from :data:`EXPORT_FORMATS` (``hf``, ``webdataset``), in the order to write.
        shard_size: Samples per WebDataset tar and per hf Parquet file (the run's
            ``export_shard_size``).
        run_id: The run's id, for messages; default: the one its run.json records.

    Returns:
        ``{format: URI of its folder under the run root}``, in the order of ``formats``.

    Raises:
        ValueError: an unknown or repeated format (named, before anything is read), a run that is
            not finalized (no ``manifest.parquet`` or ``_SUCCESS``; the run is named), an image
            whose bytes do not match the manifest, or a folder holding an export with other settings.
    """
    from normguide.export.hf import export_hf
    from normguide.export.webdataset import export_webdataset

    # 1. Check inputs
    formats = list(formats)
    bad = [f for f in formats if f not in EXPORT_FORMATS]
    if bad:
        raise ValueError(f"formats: unknown export format(s) {bad}; choose from {list(EXPORT_FORMATS)}")
    if len(set(formats)) != len(formats):
        raise ValueError(f"formats must not repeat, got {formats}")
    size = DEFAULT_EXPORT_SHARD_SIZE if shard_size is None else shard_size
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"shard_size must be a positive integer, got {size!r}")
    if not formats:
        return {}
    # 2. The finished run, then each format
    if run_id is None:
        run_id = recorded_run_id(storage)
    run = open_finished_run(storage, run_id)
    writers = {"hf": export_hf, "webdataset": export_webdataset}
    return {f: writers[f](run, size) for f in formats}


def load_snippet(fmt: str, uri: str, *, endpoint_url: str | None = None, num_shards: int = 1) -> str:
    """One line of Python that loads the export of format ``fmt`` whose folder is ``uri``.

    Args:
        fmt: ``hf`` or ``webdataset``.
        uri: The export's folder (what :func:`export_run` returned for it).
        endpoint_url: The S3 endpoint of an s3:// run, when not AWS's (credentials come from the
            environment, as for any s3fs or aws CLI call).
        num_shards: The WebDataset export's shard count (``shards`` in its ``_SUCCESS``).
    """
    s3 = uri.startswith("s3://")
    if fmt == "hf":
        opts = f", storage_options={{'endpoint_url': {endpoint_url!r}}}" if s3 and endpoint_url else ""
        return f'datasets.load_dataset("parquet", data_files="{uri}/*/train-*.parquet", split="train"{opts})'
    if fmt == "webdataset":
        from normguide.export.webdataset import shard_pattern

        pattern = shard_pattern(uri.rsplit("/", 1)[0], num_shards)
        if s3:
            endpoint = f" --endpoint-url {endpoint_url}" if endpoint_url else ""
            pattern = f"pipe:aws s3 cp{endpoint} {pattern} -"
        return f'webdataset.WebDataset("{pattern}", shardshuffle=False)'
    raise ValueError(f"format: unknown export format {fmt!r}; choose from {list(EXPORT_FORMATS)}")
