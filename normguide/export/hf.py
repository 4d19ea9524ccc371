"""Hugging Face ``datasets`` export: Parquet files with the images embedded.

Layout under the run root::

    hf/<method>/train-00000-of-00002.parquet   one folder per seed method, shard_size rows per file
    hf/_SUCCESS                                 written after every file: the export's settings

Why Parquet with embedded images rather than an ImageFolder with ``metadata.jsonl``:

* It loads the same way from a local run and from S3 (``data_files`` + ``storage_options``);
  an ImageFolder's metadata is ignored unless it sits inside the split folder (datasets issue
  #6442), and the run's ``images/<concept>/`` folders are not split folders.
* The types travel with the data: each file's Arrow schema carries the ``huggingface`` metadata
  that ``datasets`` itself writes (built here with ``datasets.Features``), so ``image`` is an
  ``Image``, ``label`` a ``ClassLabel`` over the concept ids, and every manifest column keeps its
  type, without a loading script or a card.
* One folder per method makes an ablation one argument away: a config per method is a glob.
* A file is one object written atomically; a killed export rewrites at most the missing files.

Columns: ``image`` (PNG bytes; ``path`` is the image's key under the run), ``label`` (the
concept's index in the sorted concept ids), then every manifest column in manifest order. Row
groups of 100 rows, as ``datasets`` writes image datasets, so a streaming reader holds little.

:func:`hf_card_yaml` gives the dataset card's YAML header (configs ``default`` = every method and
one per method, with their features and split sizes), so that ``datasets.load_dataset(<run
root>)`` works once the card is written at the run root as ``README.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from normguide.data import layout
from normguide.data import manifest as mf
from normguide.export.source import (
    FinishedRun,
    finish_export,
    finished_export,
    image_keys,
    parquet_bytes,
    read_images,
    refuse_strangers,
    shard_ranges,
    start_export,
)

if TYPE_CHECKING:
    import datasets

FOLDER = layout.HF_DIR
SPLIT = layout.HF_SPLIT
#: Rows per Parquet row group; datasets' own value for image datasets.
ROW_GROUP_SIZE = 100


def hf_features(concepts: Sequence[str], schema: pa.Schema = mf.MANIFEST_SCHEMA) -> datasets.Features:
    """``image`` (Image), ``label`` (ClassLabel named by ``concepts``, in that order), then the
    manifest's columns with the types ``datasets`` maps ``schema`` to."""
    from datasets import ClassLabel, Features, Image

    return Features({"image": Image(), "label": ClassLabel(names=list(concepts)),
                     **Features.from_arrow_schema(schema)})


def manifest_schema(schema: pa.Schema) -> pa.Schema:
    """``schema``'s columns, typed as :data:`~normguide.data.manifest.MANIFEST_SCHEMA` types the
    columns it knows (a DataFrame's large strings become strings; a column of an older manifest
    stays as it is)."""
    known = {f.name: f for f in mf.MANIFEST_SCHEMA}
    return pa.schema([known.get(f.name, f) for f in schema])


def method_files(manifest: pa.Table, shard_size: int) -> dict[str, list[tuple[str, range]]]:
    """``method -> [(key of a Parquet file, the manifest rows it holds, as a range over that
    method's rows)]``, methods sorted."""
    methods = manifest.column("method").to_pylist()
    out: dict[str, list[tuple[str, range]]] = {}
    for method in sorted(set(methods)):
        ranges = shard_ranges(methods.count(method), shard_size)
        out[method] = [(layout.hf_file_key(method, i, len(ranges)), r)
                       for i, r in enumerate(ranges)]
    return out


def hf_table(rows: pa.Table, pngs: list[bytes], concepts: Sequence[str]) -> pa.Table:
    """The manifest ``rows`` with their images as an Arrow table in :func:`hf_features`' schema
    (its metadata included, so ``datasets`` reads the features back)."""
    rows = rows.cast(manifest_schema(rows.schema))
    schema = hf_features(concepts, rows.schema).arrow_schema
    label_of = {c: i for i, c in enumerate(concepts)}
    image = pa.array([{"bytes": b, "path": k} for b, k in zip(pngs, image_keys(rows))], schema.field("image").type)
    label = pa.array([label_of[c] for c in rows.column("concept_id").to_pylist()], schema.field("label").type)
    return pa.Table.from_arrays([image, label, *rows.columns], schema=schema)


def export_hf(run: FinishedRun, shard_size: int) -> str:
    """Write (or finish) the run's hf Parquet files; returns ``<run>/hf``."""
    storage, manifest = run.storage, run.manifest
    files = method_files(manifest, shard_size)
    record = {"format": "hf", "run_id": run.run_id, "shard_size": shard_size, "samples": manifest.num_rows,
              "files": {m: len(fs) for m, fs in files.items()}, "manifest_sha256": run.manifest_sha256}
    if finished_export(storage, FOLDER, record):
        return storage.uri(FOLDER)
    present = refuse_strangers(storage, FOLDER, [k for fs in files.values() for k, _ in fs])
    start_export(storage, FOLDER, record)
    methods = manifest.column("method").to_pylist()
    for method, method_shards in files.items():
        rows_of_method = manifest.take(pa.array([i for i, m in enumerate(methods) if m == method], pa.int64()))
        for key, r in method_shards:
            if key in present:  # written atomically: it exists whole or not at all
                continue
            rows = rows_of_method.slice(r.start, len(r))
            table = hf_table(rows, read_images(storage, rows), run.concepts)
            storage.write_bytes(key, parquet_bytes(table, row_group_size=ROW_GROUP_SIZE))
    finish_export(storage, FOLDER, record)
    return storage.uri(FOLDER)


def hf_card_yaml(manifest: pa.Table | Any, *, folder: str = FOLDER) -> dict[str, Any]:
    """The ``configs`` and ``dataset_info`` fields of the run's dataset card (its YAML header).

    With them in ``<run root>/README.md``, ``datasets.load_dataset("<run root>")`` loads every
    method as the ``train`` split of config ``default``, and ``load_dataset("<run root>", "<method>")``
    one method (an ablation); the features (``label`` a ClassLabel over the concept ids) are
    stated in the card as in the files.

    Args:
        manifest: The run's consolidated manifest (``manifest.parquet``), as an Arrow table or a
            pandas DataFrame; its ``concept_id`` and ``method`` columns are read, and its
            column names (typed as the manifest schema types them).
        folder: Where the hf export lies relative to the card: ``"hf"`` for a card at the run root.

    Returns:
        ``{"configs": [...], "dataset_info": [...]}``, ready for ``yaml.safe_dump`` between the
        card's ``---`` lines (merge it with the card's other fields).
    """
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCardData

    if not isinstance(manifest, pa.Table):
        manifest = pa.Table.from_pandas(manifest, preserve_index=False)
    concepts = sorted(set(manifest.column("concept_id").to_pylist()))
    methods = manifest.column("method").to_pylist()
    features = hf_features(concepts, manifest_schema(manifest.schema))

    def info(n: int) -> DatasetInfo:
        splits = SplitDict()
        splits.add(SplitInfo(name=SPLIT, num_examples=n))
        return DatasetInfo(features=features, splits=splits)

    configs = {"default": (f"{folder}/*/{SPLIT}-*.parquet", len(methods))}
    configs.update({m: (f"{folder}/{m}/{SPLIT}-*.parquet", methods.count(m)) for m in sorted(set(methods))})
    card = DatasetCardData()
    MetadataConfigs({name: {"data_files": [{"split": SPLIT, "path": path}]} for name, (path, _) in configs.items()}
                    ).to_dataset_card_data(card)
    DatasetInfosDict({name: info(n) for name, (_, n) in configs.items()}).to_dataset_card_data(card)
    infos = card["dataset_info"]
    for i in infos:  # the byte sizes are not known without the files; datasets' 0 would claim them empty
        for split in i.get("splits", []):
            split.pop("num_bytes", None)
    return {"configs": card["configs"], "dataset_info": infos}
