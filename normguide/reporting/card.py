"""The dataset card: ``README.md`` at the run root, in the Hugging Face dataset-card format.

A YAML header (``license``, ``task_categories``, ``tags``, ``size_categories``, ``pretty_name``,
``configs`` and ``dataset_info`` with features and splits) between ``---`` lines, then prose
written for someone who opens the folder knowing nothing about the run: what the data is and
that it is synthetic, the model, the methods, the counts, the evaluation, the contact sheets,
how to load it, the licence and what to cite.

Without an export the card's ``configs`` point at ``manifest.parquet`` (one row per image, the
image as a relative path); when the run has the ``hf`` export its configs (from
``normguide.export.hf_card_yaml`` when that is installed, else derived from the files) replace
them, so ``datasets.load_dataset("<run root>")`` loads the images themselves.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa
import yaml

from normguide.data import layout
from normguide.data.manifest import MANIFEST_SCHEMA
from normguide.data.text import printable
from normguide.reporting.cost import cost_lines
from normguide.reporting.records import (
    EVAL_PLOT_KEY,
    EVAL_REPORT_KEY,
    NORMS_OVERVIEW_KEY,
    ReportRecord,
    norms_key,
    sheet_key,
    shown_note,
)
from normguide.reporting.tables import METRIC_MEANINGS, counts_markdown, evaluation_markdown

CITATION = """\
@inproceedings{samuel2023normguided,
  title     = {Norm-guided latent space exploration for text-to-image generation},
  author    = {Samuel, Dvir and Ben-Ari, Rami and Darshan, Nir and Maron, Haggai and Chechik, Gal},
  booktitle = {Advances in Neural Information Processing Systems (NeurIPS)},
  year      = {2023},
  eprint    = {2306.08687},
  archivePrefix = {arXiv}
}"""

#: Hugging Face ``size_categories`` buckets: (upper bound, label).
_SIZE_BUCKETS = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
                 (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"))


def size_category(n: int) -> str:
    for bound, label in _SIZE_BUCKETS:
        if n < bound:
            return label
    return "100M<n<1B"


def _hf_dtype(t: pa.DataType) -> Any:
    """A manifest column's type in the Hugging Face features notation."""
    if pa.types.is_list(t):
        return {"sequence": _hf_dtype(t.value_type)}
    if pa.types.is_timestamp(t):
        return f"timestamp[{t.unit}" + (f", tz={t.tz}]" if t.tz else "]")
    return {pa.string(): "string", pa.bool_(): "bool"}.get(t, str(t))


def manifest_features(schema: pa.Schema = MANIFEST_SCHEMA) -> list[dict[str, Any]]:
    """A manifest's columns (``schema``: the run's own manifest.parquet, which an older run may
    have written with other columns) as Hugging Face ``features``."""
    out = []
    for f in schema:
        dtype = _hf_dtype(f.type)
        out.append({"name": f.name, **(dtype if isinstance(dtype, dict) else {"dtype": dtype})})
    return out


def derived_hf_yaml(hf_files: Sequence[str]) -> dict[str, Any]:
    """``configs`` for the ``hf`` export's files (``hf/<method>/train-*.parquet``), one config per
    method, the first the default; used when ``normguide.export`` does not provide the header."""
    methods = list(dict.fromkeys(k.split("/")[1] for k in hf_files if k.count("/") >= 2 and k.endswith(".parquet")))
    configs = [{"config_name": m, **({"default": True} if i == 0 else {}),
                "data_files": [{"split": "train", "path": f"{layout.HF_DIR}/{m}/{layout.HF_SPLIT}-*.parquet"}]} for i, m in enumerate(methods)]
    return {"configs": configs} if configs else {}


def set_split_bytes(header: Mapping[str, Any], sizes: Mapping[str, int]) -> None:
    """Give every split of ``header["dataset_info"]`` its ``num_bytes`` (``datasets`` ignores a
    split without one, with a "malformed" warning on every load): the size of the files its config
    reads (``sizes``: key -> bytes, of the ``hf`` export's files), matched by the config's glob."""
    from fnmatch import fnmatch

    paths = {c["config_name"]: [f["path"] for f in c.get("data_files", [])] for c in header.get("configs", [])}
    for info in header.get("dataset_info") or []:
        globs = paths.get(info.get("config_name", "default"), [])
        n = sum(size for key, size in sizes.items() if any(fnmatch(key, g) for g in globs))
        for split in info.get("splits", []):
            split["num_bytes"] = n


def card_yaml(run: Mapping[str, Any], record: ReportRecord, *, schema: pa.Schema = MANIFEST_SCHEMA,
              export_yaml: Mapping[str, Any] | None = None, manifest_bytes: int = 0) -> dict[str, Any]:
    """The card's YAML header as a dict (keys in the order Hugging Face's template uses); the
    ``hf`` export's ``configs`` and ``dataset_info`` (``export_yaml``) replace the manifest's."""
    license_id = (run.get("config") or {}).get("license") or "other"
    names = [c.name for c in record.concepts]
    pretty = "normguide synthetic images: " + (", ".join(names) if len(names) <= 4 else f"{len(names)} concepts")
    header: dict[str, Any] = {
        "license": license_id,
        **({"license_name": "same-as-references-and-model"} if license_id == "other" else {}),
        "task_categories": ["image-classification", "text-to-image"],
        "tags": ["synthetic", "normguide", "diffusion-seeds", "nao"],
        "size_categories": [size_category(record.images)],
        "pretty_name": pretty,
        "configs": [{"config_name": "default",
                     "data_files": [{"split": "train", "path": layout.MANIFEST}]}],
        "dataset_info": {"features": manifest_features(schema),
                         "splits": [{"name": "train", "num_bytes": manifest_bytes, "num_examples": record.images}]},
    }
    if export_yaml:
        header.update({k: v for k, v in export_yaml.items() if k in ("configs", "dataset_info")})
    return header


def _model_lines(model: Mapping[str, Any]) -> list[str]:
    lines = [
        f"- model: `{model.get('id')}`" + (f" ({model['note']})" if model.get("note") and not model.get("is_demo") else ""),
        f"- revision: `{model.get('revision')}`",
        f"- family: {model.get('family')}, scheduler: {model.get('scheduler')}, "
        f"seed shape: {' × '.join(str(s) for s in model.get('seed_shape') or [])}",
    ]
    if model.get("is_demo"):
        lines.append(
            "- This is normguide's built-in **demo model**: a small Stable-Diffusion-architecture pipeline "
            "trained from scratch on scikit-learn's bundled 8×8 handwritten digits (upsampled to 32 × 32 px). "
            "It draws digits, not photos; it exists so a first run shows what the seed methods do. "
            "Run with `--model <checkpoint>` for a real dataset."
        )
    return lines


def _load_snippets(record: ReportRecord, snippets: Mapping[str, str]) -> list[str]:
    """The "How to load" section: pandas for the manifest, and one block per export present
    (``snippets``: format -> a line of Python that loads it, from normguide.export). A local run's
    lines are relative to its folder (no path of the machine that made it: a copied folder
    loads as it is); an S3 run's name its s3:// URI."""
    s3 = record.output_root.startswith("s3://")
    root = record.output_root if s3 else "."
    opts = ', storage_options={"endpoint_url": ...})  # S3: credentials from the environment' if s3 else ")"
    lines = [
        "## How to load",
        "",
        (f"The dataset is at `{root}`." if s3 else
         "Run these from this folder (the run's folder), or set `root` to its path; every path in the manifest "
         "and the exports is relative to it, so a copied or moved folder loads as it is."),
        "",
        "**pandas, the manifest** (one row per image: concept, method, kind, path on the seed path, seed "
        "statistics, generation settings):",
        "",
        "```python",
        "import pandas as pd",
        "from PIL import Image",
        "",
        f'root = "{root}"',
        f'manifest = pd.read_parquet(f"{{root}}/manifest.parquet"{opts}',
        'print(manifest.groupby(["concept_id", "method"]).size())',
        "row = manifest.iloc[0]",
        'image = Image.open(f"{root}/{row.file_name}")' if not s3 else
        '# images: f"{root}/{row.file_name}" (read them with s3fs / fsspec)',
        "```",
        "",
    ]
    methods = list(dict.fromkeys(m for c in record.concepts for m in c.images))
    if "hf" in record.formats:
        lines += [
            "**Hugging Face `datasets`** (the `hf` export: Parquet with the images embedded, columns `image` and "
            "`label` then the manifest's; one config per method, declared in this card's header):",
            "",
            "```python",
            "import datasets",
            "",
            f'ds = datasets.load_dataset("{root}", split="train")          # every method (config "default")',
            f'ds = datasets.load_dataset("{root}", "{methods[0] if methods else "nao"}", split="train")'
            "   # one method (an ablation)",
            *([snippets["hf"] + "   # the same, without the card"] if "hf" in snippets else []),
            "```",
            "",
        ]
    else:
        lines += [
            "**Hugging Face `datasets`**: this card's header declares `manifest.parquet` as the train split, so "
            f'`datasets.load_dataset("{root}", split="train")` loads the manifest (the images as paths, '
            "`file_name`). The run has no `hf` export with the images embedded: `normguide export <run folder> "
            "--format hf` writes one and rewrites this card to load it.",
            "",
        ]
    if "webdataset" in record.formats:
        lines += [
            "**WebDataset** (tar shards for streaming training; each sample is the PNG and its manifest row as JSON):",
            "",
            "```python",
            "import webdataset",
            "",
            "ds = " + snippets.get("webdataset", f'webdataset.WebDataset("{root}/{layout.wds_shard_key(0, ".tar")}")'),
            "for sample in ds.decode(\"pil\"):",
            "    image, row = sample[\"png\"], sample[\"json\"]",
            "```",
            "",
        ]
    return lines


def cost_section(cost: Mapping[str, Any] | None) -> list[str]:
    """The card's "Cost" section: run.json ``cost`` (throughput, MFU, $ per 1,000 images), or
    nothing for a run that has none (one made before it was recorded)."""
    if not cost:
        return []
    return ["## Cost", "", "What generating the images took and cost, from [`run.json`](run.json) `cost` (over "
            + (cost.get("scope") or "this run's images") + "; model FLOP utilisation against the device's dense "
            "peak, and dollars from the device price the run was given):", "",
            *(f"- {line}" for line in cost_lines(cost)), ""]


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def dataset_card(run: Mapping[str, Any], record: ReportRecord, *, schema: pa.Schema = MANIFEST_SCHEMA,
                 export_yaml: Mapping[str, Any] | None = None, snippets: Mapping[str, str] | None = None,
                 manifest_bytes: int = 0) -> str:
    """The card's text (YAML header and prose) for a run (its run.json ``run``), its report and
    its manifest's ``schema``; ``export_yaml`` and ``snippets`` come from the exports present."""
    from normguide.data.plan import SEED_METHODS

    cfg = run.get("config") or {}
    model = run.get("model") or {}
    methods = list(dict.fromkeys(m for c in record.concepts for m in c.images))
    refs = [c.references for c in record.concepts]
    refs_text = (plural(min(refs), "real reference image") if refs and min(refs) == max(refs)
                 else f"{min(refs, default=0)}–{max(refs, default=0)} real reference images")
    gen, inv = cfg.get("generation") or {}, cfg.get("inversion") or {}
    fields = card_yaml(run, record, schema=schema, export_yaml=export_yaml, manifest_bytes=manifest_bytes)
    header = yaml.safe_dump(fields, sort_keys=False, allow_unicode=True, width=1000)
    pretty = fields["pretty_name"]

    lines = [
        "---", header.rstrip("\n"), "---", "",
        f"# {pretty}",
        "",
        f"> **Synthetic data.** All {record.images} images in this dataset were generated by a diffusion model "
        f"(`{model.get('id')}`) from {refs_text} per concept. None of them is a real "
        "photograph or sample; do not use them as evidence about the real world, and check them before training "
        "on them.",
        "",
        *(["## Warnings", "",
           "normguide found, at the start of the run, that the model may not draw what the concept table asks:",
           "", *(f"- {printable(w)}" for w in run["warnings"]), ""] if run.get("warnings") else []),
        "## What this is",
        "",
        f"normguide run `{record.run_id}`: {plural(record.images, 'image')} of {plural(len(record.concepts), 'concept')}, "
        f"{plural(len(methods), 'seed method')} ({', '.join(f'`{m}`' for m in methods)}). For each concept, normguide inverted its reference "
        f"images to diffusion seeds (DDIM inversion, {inv.get('num_inference_steps')} steps), planned new seeds "
        "from them (a centroid and points on paths between the seeds, with the geometry of each method), and "
        f"generated one image per planned seed with the concept's prompt ({gen.get('num_inference_steps')} DDIM steps, "
        f"guidance {gen.get('guidance_scale')}). The method is the ablation axis: every method uses the same "
        "references, prompt and image budget.",
        "",
        "## Model",
        "",
        *_model_lines(model),
        "",
        "## Methods",
        "",
        *(f"- `{m}`: {SEED_METHODS[m].description if m in SEED_METHODS else 'unknown method'}" for m in methods),
        "",
        "## Contents",
        "",
        "Images per concept and method:",
        "",
        *counts_markdown({c.concept_id: (c.name, c.images) for c in record.concepts},
                         references={c.concept_id: c.references for c in record.concepts}),
        "",
        "Prompts: " + "; ".join(f"`{c.concept_id}`: \"{c.prompt}\"" for c in record.concepts) + ".",
        "",
    ]
    if record.evaluation:
        lines += [
            "## Evaluation",
            "",
            (f"Judge (feature model): {record.judge}. " if record.judge else "")
            + "Values are means over concepts; the full report with per-concept tables is "
            f"[`{EVAL_REPORT_KEY}`]({EVAL_REPORT_KEY}) and the plot [`{EVAL_PLOT_KEY}`]({EVAL_PLOT_KEY}).",
            "",
            *evaluation_markdown(record.evaluation),
            "",
            *(f"- **{m}**: {METRIC_MEANINGS[m]}" for m in METRIC_MEANINGS
              if any(m in v for v in record.evaluation.values())),
            "",
        ]
    else:
        lines += ["## Evaluation", "", "This run was not evaluated (no `eval/metrics.parquet`); "
                  "`normguide evaluate <run>` scores it.", ""]
    lines += cost_section(run.get("cost"))
    lines += [
        "## Contact sheets",
        "",
        "The report to look at in a browser is [`report/index.html`](report/index.html): these pictures, the "
        "evaluation, and a page per concept showing every image with its manifest fields (relative links: it "
        "works from a local disk or a static host such as an S3 website).",
        "",
        "Each sheet shows a concept's real reference images (top, on a light orange band) and below them each "
        "method's generated images, captioned with what they are (`centroid`; `i to j, t=…`: the point at "
        "fraction t of the path between references i and j, numbered from 0; `c to j, t=…`: on the path from "
        "the centroid to reference j), their image id and their seed-norm z-score. The seed-norm plot "
        "shows where the seeds sit relative to the norms the model was trained on (|z| ≤ 2).",
        "",
    ]
    if record.seed_norms_overview_uri:
        lines += [shown_note(len(record.shown), len(record.concepts)) + " The others are listed in "
                  "[`report/index.html`](report/index.html).", "",
                  f"![seed norms of every concept]({NORMS_OVERVIEW_KEY})", ""]
    for c in record.shown:
        lines += [
            f"### `{c.concept_id}` ({c.name})",
            "",
            f"![contact sheet of {c.concept_id}]({sheet_key(c.concept_id)})",
            "",
            f"![seed norms of {c.concept_id}]({norms_key(c.concept_id)})",
            "",
        ]
    lines += [
        "## Files",
        "",
        "```",
        "README.md                          this card",
        "manifest.parquet                   one row per image (all concepts)",
        "images/<concept_id>/<image_id>.png the images; image_id = <method>-<kind>-<index>",
        "seeds/<concept_id>.safetensors     inverted seeds, centroids and planned seeds",
        "report/index.html                  the report to look at in a browser (a page per concept)",
        "report/index.md                    summary; report/<concept_id>/ contact sheet and seed-norm plot",
        *(["eval/                              metrics.parquet, report.md, metrics.png"] if record.evaluation else []),
        *(["hf/<method>/train-*.parquet        Hugging Face datasets export"] if "hf" in record.formats else []),
        *(["webdataset/shard-NNNNN.tar         WebDataset export"] if "webdataset" in record.formats else []),
        "run.json                           configuration, model, versions, start and end",
        "_SUCCESS                           written last: the run is complete",
        "```",
        "",
        *_load_snippets(record, snippets or {}),
        "## Licence",
        "",
        (f"Declared in the run's configuration: `{cfg['license']}`." if cfg.get("license") else
         "No licence was set for this run. The images derive from the reference images and from the model, so "
         "they carry the same terms as the reference images and the model's licence; set your own (`license` "
         "in this header) before sharing the dataset."),
        "",
        "## Citation",
        "",
        "The seed methods follow Samuel et al., *Norm-guided latent space exploration for text-to-image "
        "generation*, NeurIPS 2023:",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
        "## Provenance",
        "",
        f"- run id `{record.run_id}`, started {run.get('started_at')}, finished {run.get('finished_at')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in sorted((run.get("versions") or {}).items())),
        "- the full configuration is in [`run.json`](run.json); generated by normguide (`normguide run`)",
        "",
    ]
    return "\n".join(lines)
