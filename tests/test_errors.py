"""One error family: every normguide exception is a NormguideError of one kind, and the kind
alone decides the exit code and whether a retry may help (normguide.errors)."""

from __future__ import annotations

import pytest

from normguide import errors
from normguide.data.images import ReferenceImageError
from normguide.data.schema import ConceptTableError
from normguide.data.storage import LeaseDamaged, LeaseHeld, LeaseLost, StorageError
from normguide.data.storage.s3 import ObjectTooLarge
from normguide.data.text import TemplateError
from normguide.data.verify import DamagedRunError
from normguide.diffusion import PrecisionError, UnsupportedFeatureError, UnsupportedPipelineError
from normguide.diffusion.loading import ModelLoadError
from normguide.diffusion.prompts import PromptTooLongError
from normguide.reporting.show import NotARunError

KINDS = {
    ConceptTableError: errors.InputError, ReferenceImageError: errors.InputError, ModelLoadError: errors.InputError,
    NotARunError: errors.InputError, TemplateError: errors.InputError, PromptTooLongError: errors.InputError, LeaseHeld: errors.InputError,
    LeaseDamaged: errors.InputError, ObjectTooLarge: errors.InputError, DamagedRunError: errors.InputError,
    UnsupportedPipelineError: errors.InputError, UnsupportedFeatureError: errors.InputError,
    StorageError: errors.StorageError, PrecisionError: errors.RunFailure, LeaseLost: errors.RunFailure,
}


@pytest.mark.parametrize("cls", list(KINDS), ids=lambda c: c.__name__)
def test_each_exception_class_is_one_kind_of_the_family(cls):
    assert issubclass(cls, errors.NormguideError)
    assert issubclass(cls, KINDS[cls])
    others = {errors.InputError, errors.StorageError, errors.RunFailure} - {KINDS[cls]}
    assert not any(issubclass(cls, o) for o in others)


def test_kinds_keep_their_builtin_bases_so_old_except_clauses_still_catch_them():
    assert issubclass(ConceptTableError, ValueError) and issubclass(LeaseHeld, ValueError)
    assert issubclass(StorageError, RuntimeError) and issubclass(PrecisionError, RuntimeError)


def test_storage_error_is_the_same_class_everywhere():
    from normguide.data.storage.errors import StorageError as from_errors_module

    assert from_errors_module is errors.StorageError is StorageError


def test_every_exception_class_in_the_code_is_in_the_family():
    import ast
    import pathlib

    root = pathlib.Path(__file__).resolve().parents[1]
    found = set()
    for folder in ("normguide", "flows", "tasks", "deployments"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and any(
                        getattr(b, "id", getattr(b, "attr", "")).endswith(("Error", "Exception", "Failure"))
                        or getattr(b, "id", "") in ("ValueError", "RuntimeError", "InputError", "RunFailure")
                        for b in node.bases):
                    if not node.name.startswith("_"):  # a module's private signal never escapes it
                        found.add(node.name)
    names = {c.__name__ for c in KINDS} | {"NormguideError", "InputError", "StorageError", "RunFailure"}
    assert found <= names, f"exception classes outside the family's test: {sorted(found - names)}"


@pytest.mark.parametrize("exc, code, retry", [
    (ConceptTableError("t.parquet", ["bad"]), errors.EXIT_BAD_INPUT, False),
    (ValueError("plain bad value"), errors.EXIT_BAD_INPUT, False),
    (FileNotFoundError("missing"), errors.EXIT_BAD_INPUT, False),
    (PermissionError("denied"), errors.EXIT_BAD_INPUT, False),
    (StorageError("endpoint down"), errors.EXIT_FAILED, True),
    (LeaseLost("taken over"), errors.EXIT_FAILED, True),
    (RuntimeError("anything else"), errors.EXIT_FAILED, True),
    (KeyboardInterrupt(), errors.EXIT_INTERRUPTED, True),
], ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v))
def test_the_kind_decides_exit_code_and_retry(exc, code, retry):
    assert errors.exit_code(exc) == code
    assert errors.retry_can_help(exc) is retry


def test_exit_codes_are_the_documented_ones():
    assert (errors.EXIT_OK, errors.EXIT_FAILED, errors.EXIT_BAD_INPUT, errors.EXIT_INTERRUPTED) == (0, 1, 2, 130)
