"""Reading a run's concept table and its reference images, with no model and no torch.

``normguide validate`` and the pipeline's steps use the same two functions, so a table that
validates is the table a run accepts. ``read_input`` is any ``uri -> bytes`` reader (the run
context's, which honours the storage settings).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from PIL import Image

from normguide.data.images import ReferenceImageError, decode_reference
from normguide.data.input_policy import InputPolicy, input_policy
from normguide.data.schema import Concept, ConceptTableError, parse_concept_table
from normguide.data.storage import check_uri_scheme

ReadInput = Callable[[str], bytes]


def load_concepts(config, read_input: ReadInput, concept_ids: Sequence[str] | None = None) -> list[Concept]:
    """Read and validate the concept table of ``config``; every bad reference URI scheme, and
    every reference outside the allowed input roots (:mod:`normguide.data.input_policy`), is
    reported at once, before any reference is read."""
    source = config.concepts
    check_uri_scheme(source, field="concepts")
    concepts = parse_concept_table(read_input(source), source=source, limits=config.limits,
                                   template=config.prompt_template).select(concept_ids)
    check_reference_schemes(source, concepts, policy=input_policy(config))
    return concepts


def check_reference_schemes(source: str, concepts: Sequence[Concept], *, policy: InputPolicy | None = None) -> None:
    """Every reference URI of ``concepts`` has a supported scheme and, with ``policy``, lies
    under an allowed input root; else one :class:`ConceptTableError` for the table ``source``
    names every bad one (no file is touched: a refusal never depends on whether it exists)."""
    problems = []
    for c in concepts:
        for uri in c.reference_uris:
            try:
                check_uri_scheme(uri, field=f"reference_uris of concept {c.concept_id!r}")
            except ValueError as exc:
                problems.append(str(exc))
                continue
            if policy is not None and not policy.allows(uri):
                problems.append(policy.refusal(uri, concept_id=c.concept_id))
    if problems:
        raise ConceptTableError(source, problems)


def read_references(read_input: ReadInput, concept: Concept, *, policy: InputPolicy | None = None) -> list[Image.Image]:
    """The concept's reference images, decoded; every bad one of the concept is named in one
    :class:`ReferenceImageError` (missing, empty, not an image, truncated, too small or large).
    A reference ``policy`` refuses is never read (its refusal is the same whether it exists)."""
    cid = concept.concept_id
    images, problems = [], []
    for uri in concept.reference_uris:
        if policy is not None and not policy.allows(uri):
            problems.append(policy.refusal(uri, concept_id=cid))
            continue
        try:
            images.append(decode_reference(read_input(uri), uri=uri, concept_id=cid))
        except FileNotFoundError as exc:
            where = f" ({exc.strerror})" if uri.startswith("s3://") and exc.strerror else ""  # endpoint, bucket
            problems.append(f"concept {cid!r}: reference image {uri!r} does not exist{where}")
        except ReferenceImageError as exc:
            problems.append(str(exc))
        except ValueError as exc:  # not a regular file, too large, access denied (named by storage)
            problems.append(f"concept {cid!r}: reference image {uri!r}: {exc}")
    if problems:  # every bad reference of the concept at once, so one fix-up round suffices
        raise ReferenceImageError("; ".join(problems))
    return images
