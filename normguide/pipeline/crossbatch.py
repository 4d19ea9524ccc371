"""Generation in batches across concepts (``generation.batch_across_concepts``; issue 23).

Off (the default), each concept's images are generated in batches of ``generation.batch_size`` cut
at the concept's last image: a concept of 1 image at batch 32 runs a UNet batch of 1. On, the
concepts of one runner call (the local driver's whole list; a Prefect ``generate-concepts`` task's
batch) are inverted, planned and refined one by one as before, then their images are generated in
batches that cross concept boundaries (rows in concept order, then plan order; the UNet takes one
prompt embedding per row: ``generate_images`` with a prompt per seed). Images are written per
batch on a writer thread (overlapping the next batch), the lease checked before each write, and
a concept's manifest part written as soon as all its images exist.

Groups. Concepts are taken in *groups* (:func:`groups`): consecutive concepts, cut once their
expected images (``num_images`` x methods) reach ``WINDOW_BATCHES`` x ``batch_size``. A group's
planned seeds are what is held in memory at once, and batches never cross a group's end. The rule
depends only on the concept list and the config, and both drivers apply it to the same list (the
concepts not yet complete, in table order): the local driver to all of them, the Prefect flow by
giving each task whole groups (:func:`task_batches`). So both drivers form the same batches and
write the same bytes for the same config and starting state.

Failures stay per concept: a concept whose inversion, plan or refinement fails is that concept's
failed outcome and takes no place in a batch; a shared batch that fails (or whose write fails)
sends its concepts to :func:`steps.generate` one by one (reusing what was written), so only the
concept that fails alone fails. The generation time of a batch is split among its concepts by
their images in it (each concept's ``generation`` cost record).

Bytes. With ``batch_invariant`` each image's bytes do not depend on its batch mates, so they are
those of ``batch_across_concepts: false`` (tested). Batched (the default), an image's bytes depend
on its batch mates (docs/determinism.md), so they differ from the per-concept batching in the last
bits; a resumed run regroups the concepts left (as a resume inside a concept already regroups its
remaining images).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from normguide import progress
from normguide.data.schema import Concept
from normguide.data.storage import LeaseLost
from normguide.pipeline import refine as refine_stage
from normguide.pipeline import steps
from normguide.pipeline.context import RunContext, check_lease
from normguide.pipeline.results import ConceptOutcome

log = logging.getLogger("normguide")

#: A group holds the concepts whose expected images first reach this many batches.
WINDOW_BATCHES = 4


def expected_images(concept: Concept, config) -> int:
    """The images a concept is planned to have: its ``num_images`` (or ``plan.num_images``) per method."""
    return (concept.num_images or config.plan.num_images) * len(config.plan.methods)


def groups(concepts: list[Concept], config) -> list[list[Concept]]:
    """Consecutive concepts, cut after the concept whose expected images bring the group to
    ``WINDOW_BATCHES * generation.batch_size`` or more (a greedy rule, so the groups of a list
    that starts at a group's first concept are the same groups)."""
    window = WINDOW_BATCHES * config.generation.batch_size
    out: list[list[Concept]] = []
    current: list[Concept] = []
    images = 0
    for concept in concepts:
        current.append(concept)
        images += expected_images(concept, config)
        if images >= window:
            out.append(current)
            current, images = [], 0
    if current:
        out.append(current)
    return out


def task_batches(concepts: list[Concept], config, per_task: int) -> list[list[Concept]]:
    """The Prefect flow's task batches: whole groups (:func:`groups`), packed until a batch has
    at least ``per_task`` concepts, so that every task forms the groups the local driver forms."""
    out: list[list[Concept]] = []
    current: list[Concept] = []
    for group in groups(concepts, config):
        current += group
        if len(current) >= per_task:
            out.append(current)
            current = []
    if current:
        out.append(current)
    return out


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def run_concepts(ctx: RunContext, concepts: list[Concept], logger: logging.Logger | logging.LoggerAdapter,
                 on_outcome: Callable[[ConceptOutcome], None]) -> None:
    """Run ``concepts`` with generation batched across them: the complete ones are reported
    first, the others in groups (:func:`groups`). ``on_outcome`` hears each concept's outcome as
    soon as it is known (failed ones included); a lost lease propagates."""
    done = steps.complete_concepts(ctx, concepts)
    for concept in concepts:
        if concept.concept_id in done:
            on_outcome(ConceptOutcome.from_generated(done[concept.concept_id]))
    for group in groups([c for c in concepts if c.concept_id not in done], ctx.config):
        _run_group(ctx, group, logger, on_outcome)


def _failed(concept: Concept, exc: BaseException, logger) -> ConceptOutcome:
    logger.error("concept %s failed: %s", concept.concept_id, _error_text(exc))
    return ConceptOutcome.failed(concept.concept_id, _error_text(exc))


def _isolated(concept: Concept, logger, fn) -> ConceptOutcome:
    try:
        return ConceptOutcome.from_generated(fn())
    except LeaseLost:
        raise
    except Exception as exc:  # noqa: BLE001 - isolated per concept, reported in the summary
        return _failed(concept, exc, logger)


def _run_group(ctx: RunContext, concepts: list[Concept], logger, on_outcome) -> None:
    jobs: list[steps.PendingImages] = []
    for concept in concepts:  # 1. invert, plan, refine, one concept at a time, as without this option
        try:
            seeds = steps.invert(ctx, concept)
            seeds = steps.plan(ctx, concept, seeds)
            seeds = refine_stage.refine(ctx, concept, seeds)  # a no-op unless refine.enabled
            job = steps.pending_images(ctx, concept, seeds)
        except LeaseLost:
            raise
        except Exception as exc:  # noqa: BLE001 - isolated per concept
            on_outcome(_failed(concept, exc, logger))
            continue
        if job.todo:
            jobs.append(job)
        else:  # every image exists already: only the part is missing
            on_outcome(_isolated(concept, logger, lambda job=job: steps.write_part(ctx, job)))
    if jobs:
        _generate(ctx, jobs, logger, on_outcome)


def _generate(ctx: RunContext, jobs: list[steps.PendingImages], logger, on_outcome) -> None:
    """2. The jobs' missing images in batches across concepts; each part once its images exist."""
    import torch

    from normguide.diffusion import generate_images

    gen = ctx.config.generation
    model = ctx.model()
    rows = deque((j, i) for j, job in enumerate(jobs) for i in job.todo)
    seeds = [job.seeds.generation_seeds for job in jobs]
    alone: list[int] = []  # jobs whose shared batch failed: generated again one by one
    ids = [job.concept.concept_id for job in jobs]
    label = ids[0] if len(ids) == 1 else f"{ids[0]}..{ids[-1]} ({len(ids)} concepts)"

    def finish(j: int) -> None:
        on_outcome(_isolated(jobs[j].concept, logger, lambda: steps.write_part(ctx, jobs[j])))

    def collect(pending) -> None:
        for j, future in pending:
            try:
                jobs[j].records.update(future.result())
            except LeaseLost:
                raise
            except Exception as exc:  # noqa: BLE001 - that concept's write: it goes alone
                logger.warning("concept %s: writing its images failed (%s); it is generated again alone",
                               ids[j], _error_text(exc))
                if j not in alone:
                    alone.append(j)
                continue
            if j not in alone and all(i in jobs[j].records for i in jobs[j].todo):
                finish(j)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="normguide-write") as writer, \
            progress.stage(label, "generation", total=len(rows)) as bar:
        pending: list = []
        while rows:
            batch = []
            while rows and len(batch) < gen.batch_size:
                row = rows.popleft()
                if row[0] in alone:  # its concept's write failed: it is generated again alone
                    bar.advance(1)
                else:
                    batch.append(row)
            if not batch:
                break
            members = list(dict.fromkeys(j for j, _ in batch))
            z = torch.stack([seeds[j][i] for j, i in batch])
            prompts = [jobs[j].prompt for j, _ in batch]
            start = time.perf_counter()
            try:
                (images,) = list(generate_images(
                    model, z, prompts[0] if len(set(prompts)) == 1 else prompts,
                    num_inference_steps=gen.num_inference_steps, guidance_scale=gen.guidance_scale,
                    batch_size=gen.batch_size, batch_invariant=gen.batch_invariant,
                    vae_batch_size=gen.vae_batch_size))
            except LeaseLost:
                raise
            except Exception as exc:  # noqa: BLE001 - the batch's concepts go alone, so only a bad one fails
                logger.warning("a generation batch across concepts %s failed (%s); they are generated again "
                               "one by one", ", ".join(ids[j] for j in members), _error_text(exc))
                alone += [j for j in members if j not in alone]  # their other rows are skipped
                bar.advance(len(batch))
                continue
            seconds = time.perf_counter() - start
            collect(pending)  # the previous batch's writes (they overlapped this batch's generation)
            check_lease(ctx)  # before each batch's write: a run that lost its lease writes no more
            pending = []
            for j in members:
                pos = [k for k, (jj, _) in enumerate(batch) if jj == j]
                idx = [batch[k][1] for k in pos]
                meter = jobs[j].meter
                meter.seconds += seconds * len(pos) / len(batch)
                meter.images += len(pos)
                pending.append((j, writer.submit(steps._encode_and_write, ctx.storage, [jobs[j].keys[i] for i in idx],
                                                 idx, [images[k] for k in pos],
                                                 [images.precision_fallback[k] for k in pos])))
            bar.advance(len(batch))
        collect(pending)
    for j in alone:  # 3. the concepts of a failed batch, one by one (what was written is reused)
        on_outcome(_isolated(jobs[j].concept, logger, lambda j=j: steps.generate(ctx, jobs[j].concept, jobs[j].seeds)))


__all__ = ["WINDOW_BATCHES", "expected_images", "groups", "run_concepts", "task_batches"]
