"""normguide's errors: one family, and the one place that says what each kind means.

```
NormguideError                       the root: catch this to catch every normguide error
├── InputError (also a ValueError)   bad input or configuration: the same call fails the same way
│   ├── ConceptTableError            the concept table violates the schema (every problem listed)
│   ├── ReferenceImageError          a reference image is missing, empty, too large or undecodable
│   ├── ModelLoadError               a model spec that cannot be loaded
│   ├── NotARunError                 a location that holds no normguide run
│   ├── TemplateError                a prompt template that is not plain text with {name}
│   ├── PromptTooLongError           a prompt longer than the model's tokenizer reads
│   ├── LeaseHeld                    another live run holds the output root's lease
│   ├── LeaseDamaged                 a lease object that cannot be read
│   ├── LeaseDamaged                 the lease object is not a lease (hand-edited), named
│   └── ObjectTooLarge               an input object over the size limit
├── StorageError (a RuntimeError)    a storage call failed for good (past the retry budget, or refused)
└── RunFailure (a RuntimeError)      the run itself failed while working
    ├── PrecisionError               a sample non-finite in the model's precision and in float32
    └── LeaseLost                    the run's lease was taken over or expired: stop writing
```

What a kind means is written once, here: :func:`exit_code` (the CLI's exit status) and
:func:`retry_can_help` (whether a retry may succeed; bad input is never retried). Plain
``ValueError`` (pydantic's validation errors among them), ``FileNotFoundError`` and
``PermissionError`` count as bad input too: they come from the libraries normguide calls with
the user's settings and paths.

Each kind keeps the builtin base it had (``ValueError`` or ``RuntimeError``), so code that
catches those still catches normguide's errors.
"""

from __future__ import annotations

__all__ = [
    "BAD_INPUT", "EXIT_BAD_INPUT", "EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "InputError", "NormguideError", "RunFailure",
    "StorageError", "exit_code", "is_bad_input", "retry_can_help",
]

#: The ``normguide`` command's exit statuses.
EXIT_OK = 0  # done, or nothing to do
EXIT_FAILED = 1  # some concepts (or the evaluation) failed; or an unexpected error
EXIT_BAD_INPUT = 2  # bad input or configuration: nothing was generated
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM: run.json says so; rerun to resume


class NormguideError(Exception):
    """The root of normguide's errors. The message is one line a user can act on (a table's
    problems may follow on indented lines), naming the field, file or concept, never a secret."""


class InputError(NormguideError, ValueError):
    """Bad input or configuration: a retry fails the same way (exit 2, never retried)."""


class StorageError(NormguideError, RuntimeError):
    """A storage call failed for good: the endpoint stayed unreachable past the retry budget,
    or it refused the request. The message names the endpoint and the key, never a secret."""


class RunFailure(NormguideError, RuntimeError):
    """The run failed while working (not because of its input): exit 1; a retry may help."""


#: What counts as bad input, for ``except BAD_INPUT:`` (:func:`is_bad_input` says the same):
#: the family's InputError and the builtins the libraries normguide calls raise for bad settings.
BAD_INPUT: tuple[type[BaseException], ...] = (InputError, ValueError, FileNotFoundError, PermissionError)


def is_bad_input(exc: BaseException) -> bool:
    """Whether ``exc`` means bad input or configuration (an :class:`InputError`, or a plain
    ValueError / FileNotFoundError / PermissionError from the libraries normguide calls)."""
    return isinstance(exc, BAD_INPUT)


def exit_code(exc: BaseException) -> int:
    """The ``normguide`` exit status for a run ended by ``exc``."""
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if is_bad_input(exc):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def retry_can_help(exc: BaseException) -> bool:
    """Whether retrying the step that raised ``exc`` may succeed: never for bad input (a missing
    bucket, rejected credentials, a bad scheme, a missing input fail the same way again, and a
    retry only delays the error); anything else (a storage hiccup, a lost lease) may pass."""
    return not is_bad_input(exc)
