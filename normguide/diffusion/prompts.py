"""Prompt length in the model's own tokenizer (docs/limits.md).

A text encoder reads a fixed number of tokens (CLIP: 77, begin and end markers included); the
pipelines cut a longer prompt short and log the part they drop, once per encoding (inversion and
generation each encode it), so a 100 KB prompt filled the log twice per concept and the images
followed a prompt other than the one the manifest records. :func:`check_prompt_tokens` refuses
such a prompt up front instead, naming the concept, before any model work on it.
"""

from __future__ import annotations

from normguide.errors import InputError

#: Tokenizers without a real maximum report a huge sentinel (transformers' VERY_LARGE_INTEGER).
_NO_LIMIT = 1_000_000


class PromptTooLongError(InputError):
    """A prompt has more tokens than the model reads (or than ``limits.max_prompt_tokens``)."""


def _tokenizers(pipe) -> list:
    return [t for t in (getattr(pipe, "tokenizer", None), getattr(pipe, "tokenizer_2", None)) if t is not None]


def token_limit(model, setting: int | None = None) -> int | None:
    """The most tokens a prompt may have: what the model's tokenizers read (the smallest), lowered
    to ``setting`` when that is smaller; None when neither says."""
    reads = [int(t.model_max_length) for t in _tokenizers(model.pipe) if 0 < int(t.model_max_length) < _NO_LIMIT]
    limits = reads + ([setting] if setting is not None else [])
    return min(limits) if limits else None


def check_prompt_tokens(model, prompt: str, *, concept_id: str, setting: int | None = None) -> None:
    """Raise :class:`PromptTooLongError` (one line, naming the concept, not echoing the prompt)
    when ``prompt`` has more tokens than :func:`token_limit` allows."""
    limit = token_limit(model, setting)
    tokenizers = _tokenizers(model.pipe)
    if limit is None or not tokenizers:
        return
    # cut at limit + 1: enough to tell, and no "sequence length is longer" notice from transformers
    n = max(len(t(prompt, truncation=True, max_length=limit + 1)["input_ids"]) for t in tokenizers)
    if n > limit:
        why = ("limits.max_prompt_tokens" if setting is not None and setting == limit
               else "what the model's text encoder reads")
        raise PromptTooLongError(
            f"concept {concept_id!r}: its prompt has more than {limit} tokens (begin and end markers included; "
            f"{limit} is {why}); the model would silently ignore the rest: shorten it")
