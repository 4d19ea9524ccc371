"""The long-tail protocol in a run's evaluation, on the user's own labelled real table
(``evaluation.labelled_table``; the protocol itself is ``normguide.evaluation.longtail``).

The table (Parquet, a local path or s3:// URI) has one row per real image: ``image_uri`` (a
relative path resolves against the table's folder, as in the concept table), ``label`` and
``split`` (``train`` or ``test``). The run's concepts are the rare classes, and their label in
the table is their **concept_id**; every other label is a common class. The evaluation step
embeds the table's images, each concept's references and the run's images of each method with
the CLIP model of ``evaluation.clip_model`` and fits a linear probe per training set (real
only, real + references, real re-weighted, real + <method>, real + references + <method>),
tested on the test split: ``eval/longtail.parquet`` and a section of ``eval/report.md``.

:func:`check_evaluation_inputs` (from ``steps.prepare`` and at the start of the evaluation step)
refuses a bad table or CLIP directory with one line naming the field and the table, before any
model loads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from normguide.data.parquet_io import read_frame
from normguide.data.schema import resolve_reference, table_folder
from normguide.data.storage import check_uri_scheme
from normguide.evaluation.stream import Chained, LazyImages, chunks

FIELD = "evaluation.labelled_table"
TABLE_CHUNK = 256  # table images read and embedded at a time
CLIP_FIELD = "evaluation.clip_model"


def read_labelled_table(source: str, read_input) -> pd.DataFrame:
    """The table at ``source`` with its ``image_uri`` resolved (relative paths against the table's
    folder) and checked for a supported scheme; one-line ValueError naming the field and table
    otherwise (it does not exist, is not Parquet, lacks a column). No image is read."""
    from normguide.evaluation.longtail import LABELLED_COLUMNS

    check_uri_scheme(source, field=FIELD)
    try:
        data = read_input(source)
    except FileNotFoundError as exc:
        why = f" ({exc.strerror})" if "://" in source and exc.strerror else ""
        raise ValueError(f"{FIELD}: labelled table {source!r} does not exist{why}") from None
    try:
        frame = read_frame(data)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for non-Parquet input
        raise ValueError(f"{FIELD}: {source!r} is not a readable Parquet file ({exc})") from None
    missing = [c for c in LABELLED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{FIELD}: labelled table {source!r} lacks column(s) {missing}; expected {list(LABELLED_COLUMNS)}")
    frame = frame[list(LABELLED_COLUMNS)].reset_index(drop=True)
    bad_rows = [i for i, u in enumerate(frame.image_uri) if not isinstance(u, str) or not u.strip()]
    if bad_rows:
        raise ValueError(f"{FIELD}: labelled table {source!r}: image_uri is empty in row(s) {bad_rows[:10]}")
    base = table_folder(source)
    uris = [resolve_reference(u, base) for u in frame.image_uri]
    for i, u in enumerate(uris):
        check_uri_scheme(u, field=f"{FIELD} {source!r}, image_uri of row {i}")
    return frame.assign(image_uri=uris)


def check_labelled_table(frame: pd.DataFrame, *, source: str, concept_ids: Sequence[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train rows, test rows) of a table from :func:`read_labelled_table` for the run's concepts
    (the rare classes, labelled by their concept_id); one-line ValueError naming the field and the
    table otherwise: a split other than train/test, an empty split, a concept that is not a label,
    a concept without test images, a test class without train images."""
    from normguide.evaluation.longtail import labelled_table

    try:
        train, test = labelled_table(frame, source=repr(source), concepts=list(concept_ids))
    except ValueError as exc:  # "labelled table '<source>': ..."
        raise ValueError(f"{FIELD}: {exc}") from None
    untested = [c for c in concept_ids if c not in set(test.label)]
    if untested:
        raise ValueError(f"{FIELD}: labelled table {source!r}: concept(s) {untested} have no test images (split "
                         "'test'); the rare-class accuracy is measured on them")
    return train, test


def check_evaluation_inputs(config, read_input, concept_ids: Sequence[str]) -> None:
    """Before any model work: when the run will evaluate with CLIP or a labelled table, the CLIP
    directory is one (``evaluation.clip_model``; reads its config.json), and the labelled table
    is usable for these concepts. Reads the table, never its images. Evaluation off: no check."""
    ev = config.evaluation
    if ev.enabled is False or not (ev.labelled_table or (ev.clip_model and ev.judge in ("auto", "clip"))):
        return
    from normguide.evaluation.judges import check_clip_directory

    check_clip_directory(ev.clip_model, what=CLIP_FIELD)
    if ev.labelled_table:
        frame = read_labelled_table(ev.labelled_table, read_input)
        check_labelled_table(frame, source=ev.labelled_table, concept_ids=concept_ids)


def _embedder(judge, clip_model: str):
    """``embed(images)`` of the CLIP model at ``clip_model``: the evaluation's judge when it is
    that model, else that model loaded (never downloaded)."""
    from pathlib import Path

    from normguide.evaluation import ClipJudge

    if isinstance(judge, ClipJudge) and Path(judge.path) == Path(clip_model).expanduser():
        return judge
    return ClipJudge(clip_model)


def longtail_frame(config, read_input, decode, *, judge, manifest: pd.DataFrame, images: Sequence,
                   references: dict[str, Sequence]) -> pd.DataFrame:
    """The protocol's frame (``normguide.evaluation.longtail.COLUMNS``) for a finished run:
    ``manifest`` and its ``images`` (aligned; any sequence, e.g. decoded as read), each
    concept's reference images; every image set is read and embedded a chunk at a time;
    ``decode(bytes, where)`` decodes a table image. The run's concepts are the rare classes."""
    from normguide.evaluation import longtail as lt

    source = config.evaluation.labelled_table
    concept_ids = list(dict.fromkeys(manifest.concept_id))
    train, test = check_labelled_table(read_labelled_table(source, read_input), source=source, concept_ids=concept_ids)
    clip = _embedder(judge, config.evaluation.clip_model)

    def read(uri: str):
        try:
            return decode(read_input(uri), uri)
        except FileNotFoundError:
            raise ValueError(f"{FIELD}: labelled table {source!r}: image {uri!r} does not exist") from None

    def embed(ims) -> np.ndarray:
        # a chunk at a time (256: CLIP's batches unchanged): never all the images decoded at once
        parts = [clip.embed(chunk) for chunk in chunks(ims, TABLE_CHUNK)]
        return np.concatenate(parts) if parts else clip.embed([])

    def table_feats(rows: pd.DataFrame) -> lt.Labelled:
        return lt.Labelled.of(embed(LazyImages(list(rows.image_uri), read)), rows.label)

    real_train = table_feats(train)
    real_test = table_feats(test)
    refs = lt.Labelled.of(embed(Chained(*(references[c] for c in concept_ids))),
                          [c for c in concept_ids for _ in references[c]])
    synthetic = {}
    for method in dict.fromkeys(manifest.method):
        rows = [i for i, m in enumerate(manifest.method) if m == method]
        synthetic[str(method)] = lt.Labelled.of(embed(LazyImages(rows, images.__getitem__)),
                                                [manifest.concept_id.iloc[i] for i in rows])
    return lt.augmentation_table(real_train, real_test, concept_ids, references=refs, synthetic=synthetic,
                                 classifiers=("linear",))


def longtail_markdown(frame: pd.DataFrame, *, source: str, clip_model: str) -> str:
    """The report section for :func:`longtail_frame`'s table."""
    from pathlib import Path

    lines = [
        "## Long-tail augmentation (evaluation.labelled_table)",
        "",
        f"A linear probe (logistic regression) on the image features of `{Path(clip_model).name}`, trained on "
        f"the train split of `{source}` plus what each training set adds, tested on its test split. The run's "
        "concepts are the rare classes: **rare-class accuracy** is the mean recall over them, **overall** the "
        "mean recall over every class of the test split. `real + references` adds each concept's references; "
        "`real, re-weighted` weights classes inversely to their counts (what a practitioner does without a "
        "generator). One probe on one split: treat differences of a few points as noise.",
        "",
        "| training set | rare-class accuracy | overall accuracy | images added | training images |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in frame.itertuples():
        lines.append(f"| {r.training_set} | {r.rare_accuracy:.3f} | {r.overall_accuracy:.3f} | {r.n_added} | {r.n_train} |")
    methods = frame[frame.kind == "method"]
    base = frame[frame.training_set == "real + references"]
    if len(methods) and len(base):
        best = methods.loc[methods.rare_accuracy.idxmax()]
        gain = best.rare_accuracy - float(base.rare_accuracy.iloc[0])
        lines += ["", f"Best with synthetic images: {best.training_set} ({best.rare_accuracy:.3f}), "
                      f"{gain:+.3f} over real + references."]
    return "\n".join(lines) + "\n"
