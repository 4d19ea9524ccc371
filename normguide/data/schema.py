"""The concept table (input): schema and validation.

| column         | type          | required | meaning                                          |
| -------------- | ------------- | -------- | ------------------------------------------------ |
| concept_id     | string        | yes      | unique; ``[A-Za-z0-9._-]{1,128}``, used in keys   |
| name           | string        | yes      | human name, fills ``{name}`` in the prompt        |
| reference_uris | list<string>  | yes      | reference images (paths or s3:// URIs), >= 1      |
| prompt         | string        | no       | overrides the template for this concept           |
| num_images     | int           | no       | overrides the run's default count                 |

Every violation is collected and reported at once, each with its column, the row's concept_id
(or row number when the id itself is bad) and what was expected.
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.parquet as pq

from normguide.data.parquet_io import read_table
from normguide.data.text import control_characters, describe
from normguide.errors import InputError

REQUIRED_COLUMNS = ("concept_id", "name", "reference_uris")
OPTIONAL_COLUMNS = ("prompt", "num_images")
SAFE_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


class ConceptTableError(InputError):
    """The concept table violates the schema; ``problems`` lists every violation."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[:50])
        more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
        super().__init__(f"concept table {source!r} is invalid ({len(problems)} problem(s)):\n{shown}{more}")


def check_safe_id(value: object, *, field: str) -> str:
    """Validate an id that becomes part of a storage key: ``[A-Za-z0-9._-]{1,128}``, not ``.``/``..``."""
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value) or value in (".", "..") or ".." in value:
        raise ValueError(
            f"{field} must match [A-Za-z0-9._-]{{1,128}} and contain no '..', got {value!r}"
        )
    return value


@dataclass(frozen=True)
class Concept:
    """One validated row of the concept table."""

    concept_id: str
    name: str
    reference_uris: tuple[str, ...]
    prompt: str | None = None
    num_images: int | None = None
    #: The reference paths as the table wrote them (relative ones unresolved); None: as above.
    raw_reference_uris: tuple[str, ...] | None = field(default=None, compare=False, repr=False)

    def resolved_prompt(self, template: str) -> str:
        """The concept's own prompt (verbatim), else ``template`` with ``{name}`` replaced as
        plain text (:mod:`normguide.data.text`; anything else in it is refused)."""
        from normguide.data.text import render_template

        return self.prompt if self.prompt else render_template(template, name=self.name)

    def definition(self) -> dict:
        """What the concept's row says, as written (reference paths unresolved, so a table moved
        with its references keeps it): stored with its seeds and manifest part, so a rerun under
        the same run id notices a row that changed since (:func:`changed_fields`)."""
        refs = self.raw_reference_uris if self.raw_reference_uris is not None else self.reference_uris
        return {"concept_id": self.concept_id, "name": self.name, "reference_uris": list(refs),
                "prompt": self.prompt, "num_images": self.num_images}


def changed_fields(stored: dict | None, concept: Concept) -> list[str]:
    """The columns of ``concept``'s row that differ from ``stored`` (a :meth:`Concept.definition`
    recorded with earlier outputs); [] when they agree or nothing was recorded (outputs written
    before definitions were recorded are taken as they are)."""
    if not stored:
        return []
    now = concept.definition()
    return sorted(k for k in set(now) | set(stored) if stored.get(k) != now.get(k))


@dataclass
class ConceptTable:
    source: str
    concepts: list[Concept] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.concepts)

    def ids(self) -> list[str]:
        return [c.concept_id for c in self.concepts]

    def select(self, concept_ids: list[str] | None) -> list[Concept]:
        if concept_ids is None:
            return list(self.concepts)
        known = {c.concept_id: c for c in self.concepts}
        unknown = [cid for cid in concept_ids if cid not in known]
        if unknown:
            raise ValueError(f"concept_ids not in the concept table {self.source!r}: {unknown}")
        return [known[cid] for cid in concept_ids]


def _is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t)


def parse_concept_table(data: bytes, *, source: str, limits=None, template: str | None = None) -> ConceptTable:
    """Parse and validate Parquet bytes; relative reference paths resolve against ``source``'s folder.
    ``limits`` (a :class:`TableLimits` or the run's ``LimitsConfig``; default: the defaults) bounds concepts,
    references, images and prompt length; ``template`` is the run's prompt template, so the
    prompt of a concept without its own is measured as it will be."""
    try:
        table = read_table(data)
    except Exception as exc:  # pyarrow raises several types for non-Parquet input
        raise ConceptTableError(source, [f"not a readable Parquet file: {exc}"]) from None
    return validate_concept_table(table, source=source, limits=limits, template=template)


def table_digest(data: bytes) -> str:
    """A digest of a concept table's content: its rows as written (reference paths unresolved),
    in concept_id order, so the same table read from another place or rewritten by another
    Parquet writer has the same digest. Bytes that are not a Parquet table are digested as bytes
    (and rejected later by :func:`parse_concept_table`)."""
    import hashlib
    import json

    try:
        rows = read_table(data).to_pylist()
        blob = json.dumps(sorted(rows, key=lambda r: str(r.get("concept_id"))), sort_keys=True, default=str).encode()
    except Exception:  # noqa: BLE001 - unreadable tables are reported by parse_concept_table
        blob = data
    return hashlib.sha256(blob).hexdigest()


@dataclass(frozen=True)
class TableLimits:
    """The bounds a concept table is checked against; ``normguide.config.LimitsConfig`` (the run's
    ``limits:`` section, whose defaults these are) is passed in their place."""

    max_concepts: int = 100_000
    max_references_per_concept: int = 1_000
    max_images_per_concept: int = 100_000
    max_prompt_chars: int = 2_000


def _default_limits() -> TableLimits:
    return TableLimits()


def validate_concept_table(table: pa.Table, *, source: str, limits=None, template: str | None = None) -> ConceptTable:
    limits = limits if limits is not None else _default_limits()
    if table.num_rows > limits.max_concepts:  # before any row is converted
        raise ConceptTableError(source, [f"the table has {table.num_rows:,} rows, more than limits.max_concepts "
                                         f"({limits.max_concepts:,}); split it or raise the limit"])
    problems: list[str] = []
    cols = table.schema.names
    missing = [c for c in REQUIRED_COLUMNS if c not in cols]
    extra = [c for c in cols if c not in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
    if missing:
        problems.append(f"missing required column(s) {missing}; required are {list(REQUIRED_COLUMNS)}")
    if extra:
        problems.append(
            f"unexpected column(s) {extra}; allowed are {list(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)}"
        )
    schema = table.schema
    expected = {
        "concept_id": ("string", _is_string),
        "name": ("string", _is_string),
        "reference_uris": (
            "list<string>",
            lambda t: (pa.types.is_list(t) or pa.types.is_large_list(t)) and _is_string(t.value_type),
        ),
        "prompt": ("string", _is_string),
        "num_images": ("integer", pa.types.is_integer),
    }
    for col, (want, ok) in expected.items():
        if col in cols and not ok(schema.field(col).type) and not pa.types.is_null(schema.field(col).type):
            problems.append(f"column {col!r} has type {schema.field(col).type}, expected {want}")
    if table.num_rows == 0:
        problems.append("the table has no rows; expected at least one concept")
    if problems:
        raise ConceptTableError(source, problems)

    base = _parent(source)
    rows = table.to_pylist()
    seen: dict[str, int] = {}
    concepts: list[Concept] = []
    for i, row in enumerate(rows):
        cid = row.get("concept_id")
        where = f"row {i} (concept_id={cid!r})"
        try:
            check_safe_id(cid, field="concept_id")
        except ValueError as exc:
            problems.append(f"column 'concept_id', {where}: {exc}")
        else:
            if cid in seen:
                problems.append(f"column 'concept_id', {where}: duplicate of row {seen[cid]}")
            seen.setdefault(cid, i)
        name = row.get("name")
        if not isinstance(name, str) or not name.strip():
            problems.append(f"column 'name', {where}: expected a non-empty string, got {name!r}")
        elif bad := control_characters(name):
            problems.append(f"column 'name', {where}: contains the control character {describe(bad[0])}; "
                            "names may not contain control or format characters (newlines, NUL, bidi overrides)")
        refs = row.get("reference_uris")
        if not refs:
            problems.append(f"column 'reference_uris', {where}: expected at least one reference image, got {refs!r}")
            refs = []
        elif len(refs) > limits.max_references_per_concept:
            problems.append(f"column 'reference_uris', {where}: {len(refs):,} reference images, more than "
                            f"limits.max_references_per_concept ({limits.max_references_per_concept:,})")
        bad_refs = [r for r in refs if not isinstance(r, str) or not r.strip()]
        if bad_refs:
            problems.append(f"column 'reference_uris', {where}: empty or null entries {bad_refs!r}")
        prompt = row.get("prompt")
        if prompt is not None and not (isinstance(prompt, str) and prompt.strip()):
            problems.append(f"column 'prompt', {where}: expected a non-empty string or null, got {prompt!r}")
        elif isinstance(prompt, str) and (bad := control_characters(prompt)):
            problems.append(f"column 'prompt', {where}: contains the control character {describe(bad[0])}; "
                            "prompts may not contain control or format characters (newlines, NUL, bidi overrides)")
        n = row.get("num_images")
        if n is not None and not (1 <= n <= limits.max_images_per_concept):
            problems.append(f"column 'num_images', {where}: expected an integer in 1..{limits.max_images_per_concept} "
                            f"(limits.max_images_per_concept) or null, got {n!r}")
        problems += _prompt_length(name, prompt, template, limits.max_prompt_chars, where)
        concepts.append(
            Concept(
                concept_id=cid if isinstance(cid, str) else str(cid),
                name=name if isinstance(name, str) else "",
                reference_uris=tuple(resolve_reference(r, base) for r in refs if isinstance(r, str) and r.strip()),
                prompt=prompt,
                num_images=n,
                raw_reference_uris=tuple(r for r in refs if isinstance(r, str) and r.strip()),
            )
        )
    if problems:
        raise ConceptTableError(source, problems)
    return ConceptTable(source=source, concepts=concepts)


def _prompt_length(name, prompt, template: str | None, most: int, where: str) -> list[str]:
    """The problem with the length of a concept's prompt as the model will get it (its own
    prompt, else the template with its name), if any; the prompt itself is never echoed."""
    if isinstance(prompt, str) and prompt.strip():
        text, column = prompt, "prompt"
    elif isinstance(name, str):
        from normguide.data.text import TemplateError, render_template

        try:
            text = render_template(template, name=name) if template else name
        except TemplateError:  # the config's validation names a bad template
            text = name
        column = "name"
    else:
        return []
    if len(text) <= most:
        return []
    what = "its prompt" if column == "prompt" else ("its prompt (the template with its name)" if template else "its name")
    return [f"column {column!r}, {where}: {what} is {len(text):,} characters long, more than "
            f"limits.max_prompt_chars ({most:,})"]


def _parent(source: str) -> str:
    if "://" in source:
        scheme, rest = source.split("://", 1)
        return f"{scheme}://{posixpath.dirname(rest)}"
    return os.path.dirname(os.path.abspath(source))


def table_folder(source: str) -> str:
    """The folder of a table at ``source`` (a local path or URI): what its relative paths resolve against."""
    return _parent(source)


def resolve_reference(ref: str, base: str) -> str:
    """A reference URI as given if absolute (or with a scheme), else relative to the table's folder."""
    if "://" in ref or ref.startswith("/"):
        return ref
    if "://" in base:
        scheme, rest = base.split("://", 1)
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, ref))}"
    return os.path.normpath(os.path.join(base, ref))


def write_concept_table(rows: list[dict], path_or_buffer) -> None:
    """Write concept rows as Parquet with the schema's types (a helper for users and tests)."""
    schema = pa.schema(
        [
            ("concept_id", pa.string()),
            ("name", pa.string()),
            ("reference_uris", pa.list_(pa.string())),
            ("prompt", pa.string()),
            ("num_images", pa.int64()),
        ]
    )
    full = [{k: r.get(k) for k in schema.names} for r in rows]
    pq.write_table(pa.Table.from_pylist(full, schema=schema), path_or_buffer)
