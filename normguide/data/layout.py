"""Every key of a run, in one place: the layout reference.

Keys are relative to the run's root, ``<output>/<run_id>/`` (a local directory or
``s3://bucket/prefix/<run_id>/``). Every module that reads or writes a run names its keys
through this module; none spells them itself.

```
<run root>/
├── run.json                                RUN_JSON: config (secrets masked), model id + revision, versions,
│                                           table digest, status (running|complete|failed|interrupted), times
├── _LEASE                                  LEASE: who is writing now: one claim per writer (host, pid,
│                                           owner token, its concepts or the coordinator, expiry)
├── seeds/<concept_id>.safetensors          seeds_key(): inverted seeds, centroid, planned seeds, their
│                                           health; metadata (JSON) in the safetensors header
├── timings/refine-<concept_id>.json        refine_timing_key(): seconds per refined seed (refinement on;
│                                           wall-clock, so kept out of the seeds file and the manifest)
├── timings/cost-<shard digest>.json        shard_cost_key(): a fan-out shard's generation cost (its run.json
│                                           ``cost`` record), which the fan-out parent sums into run.json
├── images/<concept_id>/<image_id>.png      image_key(); image_id = <method>-<kind>-<index:05d>
├── manifest/part-<concept_id>.parquet      part_key(): the concept's manifest rows, written after its
│                                           images; its concept-table row in the Parquet metadata
├── manifest.parquet                        MANIFEST: every part, consolidated at the end
├── _SUCCESS                                SUCCESS: empty, written last; its absence means incomplete
│   (derived from a finished run, after _SUCCESS:)
├── eval/metrics.parquet                    EVAL_METRICS: per concept and method (recognisability, PRDC,
├── eval/report.md                          EVAL_REPORT    Vendi, TSTR, seed z-scores), the report
├── eval/metrics.png                        EVAL_PLOT      and its plot
├── eval/longtail.parquet                   EVAL_LONGTAIL: the long-tail protocol on evaluation.labelled_table
│                                           (rare-class / overall accuracy per training set; report.md has it)
├── README.md                               CARD: the dataset card (Hugging Face dataset-card format)
├── report/index.md                         REPORT_INDEX: summary linking everything
├── report/index.html                       REPORT_HTML: the report to look at in a browser
├── report/<concept_id>/index.html          concept_page_key(): a page per concept
├── report/<concept_id>/contact_sheet.png   sheet_key()
├── report/<concept_id>/seed_norms.png      norms_key() (for at most 50 concepts of a run)
├── report/all_seed_norms.png               NORMS_OVERVIEW: every concept's seeds in one plot (runs with more
│                                           concepts than get a plot of their own)
├── hf/<method>/train-NNNNN-of-NNNNN.parquet  hf_file_key(): Hugging Face datasets export
├── hf/_SUCCESS                             export_success_key("hf"): the export's settings (JSON), last
├── webdataset/shard-NNNNN.tar              wds_shard_key(n, ".tar"): samples <concept>/<image>.{json,png}
├── webdataset/shard-NNNNN.parquet          wds_shard_key(n, ".parquet"): the shard's rows and tar offsets
├── webdataset/shard-NNNNN.stats.json       wds_shard_key(n, ".stats.json"): written last per shard
├── webdataset/_SUCCESS                     export_success_key("webdataset"): the export's settings, last
└── <export>/_STARTED                       export_started_key(): an export under way (gone once done)
```

Pure names: no IO and nothing of normguide imported, so every layer may use it.
"""

from __future__ import annotations

import hashlib

# --- the run ------------------------------------------------------------------------------------
RUN_JSON = "run.json"
SUCCESS = "_SUCCESS"
LEASE = "_LEASE"
MANIFEST = "manifest.parquet"
MANIFEST_DIR = "manifest"
IMAGES_DIR = "images"
SEEDS_DIR = "seeds"
#: A probe a storage writes and deletes to check the root is writable (never left behind).
WRITE_CHECK = ".normguide-write-check"


def seeds_key(concept_id: str) -> str:
    """A concept's seeds file."""
    return f"{SEEDS_DIR}/{concept_id}.safetensors"


def refine_timing_key(concept_id: str) -> str:
    """Seconds per refined seed of a concept (SeedSelect refinement; normguide.pipeline.refine)."""
    return f"timings/refine-{concept_id}.json"


def shard_cost_key(concept_ids) -> str:
    """A fan-out shard's cost record, named by a digest of the concept ids it was given (the
    parent, which launched it with those ids, finds it under the same name)."""
    digest = hashlib.sha256("\n".join(concept_ids).encode()).hexdigest()[:16]
    return f"timings/cost-{digest}.json"


def images_prefix(concept_id: str) -> str:
    """The folder of a concept's images (keys under it start with this plus ``/``)."""
    return f"{IMAGES_DIR}/{concept_id}"


def image_key(concept_id: str, image_id: str) -> str:
    """One generated image."""
    return f"{images_prefix(concept_id)}/{image_id}.png"


def part_key(concept_id: str) -> str:
    """A concept's manifest part."""
    return f"{MANIFEST_DIR}/part-{concept_id}.parquet"


def is_part_key(key: str) -> bool:
    """Whether ``key`` names a manifest part."""
    return key.startswith(f"{MANIFEST_DIR}/part-") and key.endswith(".parquet")


# --- evaluation, report, card -------------------------------------------------------------------
EVAL_DIR = "eval"
EVAL_METRICS = f"{EVAL_DIR}/metrics.parquet"
EVAL_REPORT = f"{EVAL_DIR}/report.md"
EVAL_PLOT = f"{EVAL_DIR}/metrics.png"
#: The long-tail protocol on the user's labelled real table (evaluation.labelled_table).
EVAL_LONGTAIL = f"{EVAL_DIR}/longtail.parquet"
#: Every key the evaluation step writes (removed together when a reopened run makes them stale).
EVAL_KEYS = (EVAL_METRICS, EVAL_REPORT, EVAL_PLOT, EVAL_LONGTAIL)
CARD = "README.md"
REPORT_DIR = "report"
REPORT_INDEX = f"{REPORT_DIR}/index.md"
REPORT_HTML = f"{REPORT_DIR}/index.html"


def concept_page_key(concept_id: str) -> str:
    """A concept's page of the HTML report."""
    return f"{REPORT_DIR}/{concept_id}/index.html"


def sheet_key(concept_id: str) -> str:
    """A concept's contact sheet."""
    return f"{REPORT_DIR}/{concept_id}/contact_sheet.png"


def norms_key(concept_id: str) -> str:
    """A concept's seed-norm plot."""
    return f"{REPORT_DIR}/{concept_id}/seed_norms.png"


#: Every concept's seeds in one seed-norm plot (written when some concepts get no plot of their own).
NORMS_OVERVIEW = f"{REPORT_DIR}/all_seed_norms.png"


# --- exports ------------------------------------------------------------------------------------
HF_DIR = "hf"
HF_SPLIT = "train"
WEBDATASET_DIR = "webdataset"
EXPORT_SUCCESS = "_SUCCESS"
EXPORT_STARTED = "_STARTED"


def export_success_key(folder: str) -> str:
    """An export folder's done-marker: the export's settings (JSON), written after every file."""
    return f"{folder}/{EXPORT_SUCCESS}"


def export_started_key(folder: str) -> str:
    """An export folder's start marker (the manifest it is made from), removed once done."""
    return f"{folder}/{EXPORT_STARTED}"


def hf_file_key(method: str, index: int, count: int) -> str:
    """One Parquet file of the hf export: ``hf/<method>/train-NNNNN-of-NNNNN.parquet``."""
    return f"{HF_DIR}/{method}/{HF_SPLIT}-{index:05d}-of-{count:05d}.parquet"


def wds_shard_name(index: int) -> str:
    """A WebDataset shard's name, ``shard-NNNNN``."""
    return f"shard-{index:05d}"


def wds_shard_key(index: int, ext: str) -> str:
    """A WebDataset shard's file: ``ext`` is ``.tar``, ``.parquet`` or ``.stats.json``."""
    return f"{WEBDATASET_DIR}/{wds_shard_name(index)}{ext}"
