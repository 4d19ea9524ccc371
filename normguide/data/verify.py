"""Verification of a finished run: what its manifest lists is there, intact, and nothing else is.

:func:`verify_run` checks, for a run with ``manifest.parquet``:

* the manifest and every manifest part are readable Parquet;
* every manifest row's image exists and is not empty (the *quick* check: one listing per
  concept folder, no image read), and with ``full`` (the default) hashes to the row's sha256
  (every image read back once: the cost of the run's size in reads);
* nothing is orphaned: no image, seeds file or manifest part of a concept the manifest does not
  list (a concept removed from the table), and no image file the manifest does not list.

It writes nothing. ``normguide verify <run>`` prints the result (exit 0 verified, 1 damaged);
``--repair`` then calls :func:`repair_run`.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from normguide.data import layout
from normguide.data.images import sha256_hex
from normguide.data.parquet_io import read_table
from normguide.data.storage import Storage
from normguide.errors import InputError

__all__ = ["DamagedRunError", "Repair", "Verification", "check_images", "missing_images", "repair_run", "verify_run"]

#: How many damaged files an error line names before "and N more".
SHOWN = 10


class DamagedRunError(InputError):
    """A finished run whose manifest lists files that are missing or corrupt: one line naming
    them (``damaged``: key relative to the run root -> what is wrong). Exit 2, never retried:
    ``normguide verify --repair`` and a rerun heal it."""

    def __init__(self, root: str, damaged: dict[str, str], *, doing: str):
        self.root, self.damaged = root, dict(damaged)
        items = sorted(damaged.items())
        named = ", ".join(f"{k} ({why})" for k, why in items[:SHOWN])
        more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
        super().__init__(f"cannot {doing} run at {root}: it is damaged, {len(items)} file(s) its manifest lists are "
                         f"missing or corrupt: {named}{more} (`normguide verify {root}` checks every file)")


def missing_images(storage: Storage, rows) -> dict[str, str]:
    """Of the images of manifest ``rows`` (``(concept_id, image_id)`` pairs), those that are
    missing or empty: key -> why. Sizes only: one listing per concept folder, no image read."""
    keys = [layout.image_key(c, i) for c, i in rows]
    sizes = storage.sizes(keys)
    return {k: "missing" if k not in sizes else "empty (0 bytes)" for k in keys if not sizes.get(k)}


def check_images(storage: Storage, rows, *, doing: str) -> None:
    """Raise :class:`DamagedRunError` (``cannot <doing> ...``) naming every image of ``rows``
    that is missing or empty (:func:`missing_images`)."""
    damaged = missing_images(storage, rows)
    if damaged:
        raise DamagedRunError(storage.root, damaged, doing=doing)


@dataclass
class Verification:
    """What :func:`verify_run` found. Keys are relative to the run root."""

    root: str
    full: bool
    images: int = 0
    damaged: dict[str, str] = field(default_factory=dict)  # key -> what is wrong
    orphans: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.orphans

    def lines(self) -> list[str]:
        how = "size and sha256" if self.full else "existence and size (quick)"
        out = [f"{self.root}: {self.images} image(s) checked ({how}): "
               + ("verified" if self.ok else f"{len(self.damaged)} damaged, {len(self.orphans)} orphaned")]
        out += [f"  damaged: {self.root}/{k} ({why})" for k, why in sorted(self.damaged.items())]
        out += [f"  orphaned: {self.root}/{k}" for k in self.orphans]
        return out


def verify_run(storage: Storage, *, full: bool = True) -> Verification:
    """Verify the finished run in ``storage`` (see the module docstring)."""
    result = Verification(root=storage.root, full=full)
    try:
        manifest = read_table(storage.read_bytes(layout.MANIFEST), columns=["concept_id", "image_id", "sha256"])
    except FileNotFoundError:
        result.damaged[layout.MANIFEST] = "missing"
        return result
    except Exception as exc:  # noqa: BLE001 - any failure to read it means it is damaged
        result.damaged[layout.MANIFEST] = f"unreadable ({type(exc).__name__}: {exc})"
        return result
    rows = manifest.to_pylist()
    concepts = {r["concept_id"] for r in rows}
    listed = {layout.image_key(r["concept_id"], r["image_id"]): r["sha256"] for r in rows}
    result.images = len(listed)

    # 1. Parts readable
    for cid in sorted(concepts):
        key = layout.part_key(cid)
        try:
            read_table(storage.read_bytes(key), columns=["image_id"])
        except FileNotFoundError:
            result.damaged[key] = "missing"
        except Exception as exc:  # noqa: BLE001
            result.damaged[key] = f"unreadable ({type(exc).__name__})"

    # 2. Images: present and not empty; with full, their sha256
    result.damaged.update(missing_images(storage, [(r["concept_id"], r["image_id"]) for r in rows]))
    if full:
        def check(key: str) -> tuple[str, str | None]:
            got = sha256_hex(storage.read_bytes(key))
            return key, None if got == listed[key] else f"sha256 {got[:12]}... is not the recorded {str(listed[key])[:12]}..."

        todo = [k for k in listed if k not in result.damaged and listed[k]]
        with ThreadPoolExecutor(max_workers=8, thread_name_prefix="normguide-verify") as pool:
            result.damaged.update({k: why for k, why in pool.map(check, todo) if why})

    # 3. Orphans: files of concepts the manifest does not list, images it does not list
    for key in storage.list(layout.IMAGES_DIR):
        if key not in listed:
            result.orphans.append(key)
    for key in storage.list(layout.SEEDS_DIR):
        cid = key.rsplit("/", 1)[-1].removesuffix(".safetensors")
        if cid not in concepts:
            result.orphans.append(key)
    for key in storage.list(layout.MANIFEST_DIR):
        if layout.is_part_key(key) and key not in {layout.part_key(c) for c in concepts}:
            result.orphans.append(key)
    result.orphans.sort()
    return result


#: Where ``repair_run`` moves orphans, under the run root (no reader globs it).
REMOVED_DIR = "_removed"


@dataclass
class Repair:
    """What :func:`repair_run` did. Keys are relative to the run root."""

    root: str
    deleted: list[str] = field(default_factory=list)  # damaged files, and the finished markers
    moved: dict[str, str] = field(default_factory=dict)  # orphan -> where it was moved
    concepts: list[str] = field(default_factory=list)  # concepts a rerun makes again

    @property
    def needs_rerun(self) -> bool:
        return bool(self.concepts) or layout.MANIFEST in self.deleted

    def lines(self) -> list[str]:
        out = [f"repair of {self.root}:"]
        out += [f"  deleted: {self.root}/{k}" for k in self.deleted]
        out += [f"  moved aside: {self.root}/{k} -> {self.root}/{to}" for k, to in self.moved.items()]
        if self.needs_rerun:
            which = ", ".join(self.concepts) or "the manifest"
            out.append(f"  to regenerate: {which}; rerun `normguide run` with the run's settings (the same config "
                       "and table): it makes only what is missing and finalizes the run again")
        elif not self.deleted and not self.moved:
            out.append("  nothing to repair")
        else:
            out.append("  the run is verified again")
        return out


def repair_run(storage: Storage, found: Verification) -> Repair:
    """Repair what :func:`verify_run` ``found`` in ``storage``, under the run's lease (a live run
    on the root is named in ``LeaseHeld`` and nothing is touched).

    * A damaged concept (an image missing, empty or with another sha256, or its manifest part
      unreadable) loses its damaged images and its manifest part, and the run its ``_SUCCESS``
      and ``manifest.parquet`` (derived from the parts; finalizing writes it again), so that a
      rerun of ``normguide run`` regenerates those images and finalizes again. run.json is
      marked ``interrupted``, naming the concepts. Damaged files are **deleted**: their bytes
      are wrong, and the rerun remakes them from the seeds.
    * Orphans (files of concepts the manifest does not list, images it does not list) are
      **moved aside** to ``_removed/<their key>``: a removed concept's work is kept, where no
      reader (the manifest parts glob, ``images/``) sees it. Delete ``_removed/`` to free the space.
    """
    from normguide.data import run_record

    result = Repair(root=storage.root)
    if found.ok:
        return result
    damaged = dict(found.damaged)
    concepts = sorted({k.split("/")[1] for k in damaged if k.startswith(f"{layout.IMAGES_DIR}/")}
                      | {k[len(f"{layout.MANIFEST_DIR}/part-"):-len(".parquet")] for k in damaged if layout.is_part_key(k)})
    with storage.acquire_lease(owner="normguide verify --repair"):
        if damaged:
            # 1. Not complete any more, first: a repair stopped half-way leaves a run a rerun heals
            finished = [k for k in (layout.SUCCESS, layout.MANIFEST) if storage.exists(k)]
            storage.delete(finished)
            result.deleted += finished
            doomed = sorted({k for k in damaged if k != layout.MANIFEST and storage.exists(k)}
                            | {layout.part_key(c) for c in concepts if storage.exists(layout.part_key(c))})
            storage.delete(doomed)
            result.deleted += [k for k in doomed if k not in result.deleted]
            result.concepts = concepts
            if storage.exists(run_record.RUN_JSON):
                what = ", ".join(concepts) or layout.MANIFEST
                storage.write_bytes(run_record.RUN_JSON, run_record.with_status(
                    storage.read_bytes(run_record.RUN_JSON), "interrupted",
                    error=f"repaired by `normguide verify --repair`: damaged files of {what} removed; rerun to "
                          "regenerate them"))
        for key in found.orphans:  # 2. Orphans moved aside: copied, then deleted
            to = f"{REMOVED_DIR}/{key}"
            storage.write_bytes(to, storage.read_bytes(key))
            storage.delete([key])
            result.moved[key] = to
    return result
