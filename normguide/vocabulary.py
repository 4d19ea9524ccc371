"""Can the model draw what the concept table asks for? Warnings, before any model work.

Two checks, both without torch (the tokenizer is read from the model's local folder: its
``tokenizer.json`` with the ``tokenizers`` library, else with transformers' tokenizer classes):

* **Words the tokenizer does not know.** Each word of each concept's prompt is tokenized alone.
  A word is unknown when it maps to the tokenizer's unknown token, or, for a byte-pair tokenizer
  that has no unknown token (CLIP's), when it falls apart into single characters (more than half
  of its pieces are one character long): the text encoder has never seen it as a word, so the
  model has no idea what it names. The demo model's tokenizer knows 13 words ("a", "photo",
  "of", "handwritten", "digit", "zero" ... "nine"): "cat" becomes ``c a t``.
* **Concepts the demo cannot draw.** The trained demo (``model: demo``) draws handwritten digits
  only; a concept whose name names no digit gets digits anyway.

Both are warnings: ``validate`` prints them and ``run`` logs them at its start and records them in
run.json (``warnings``), and the dataset card lists them. A hub id (nothing local to read) or a
built-in random-weight build (``demo:<family>``) is not checked.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

_WORD = re.compile(r"[^\W_]+")


def tokenizer_dir(model: str) -> Path | None:
    """The local tokenizer folder of ``model`` ("demo", or a local diffusers pipeline folder),
    or None where there is none to read (a hub id, a random-weight ``demo:<family>`` build)."""
    if model == "demo":
        from normguide.demo import PIPELINE_DIR

        return PIPELINE_DIR / "tokenizer"
    if model.startswith("demo:"):
        return None
    path = Path(model).expanduser()
    if (path / "tokenizer").is_dir():
        return path / "tokenizer"
    return None


class _Encoding:
    def __init__(self, ids: list[int]) -> None:
        self.input_ids = ids


class SavedFastTokenizer:
    """A saved fast tokenizer (``tokenizer.json``) read with the ``tokenizers`` library alone:
    the part of transformers' tokenizer interface :func:`unknown_words` uses (call with
    ``add_special_tokens``, ``convert_ids_to_tokens``, ``unk_token_id``) without importing
    transformers, whose import (it loads torch) costs seconds in ``validate``. The unknown token
    is the one ``tokenizer_config.json`` (else ``special_tokens_map.json``) names, as
    transformers reads it."""

    def __init__(self, folder: Path) -> None:
        import json

        from tokenizers import Tokenizer

        self._tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
        self._tok.no_padding()  # as transformers calls it unless asked: a saved file may pad to 77
        self._tok.no_truncation()
        unk = None
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if (folder / name).is_file():
                unk = json.loads((folder / name).read_text(encoding="utf-8")).get("unk_token")
                if unk is not None:
                    break
        if isinstance(unk, dict):
            unk = unk.get("content")
        self.unk_token_id = self._tok.token_to_id(unk) if isinstance(unk, str) else None

    def __call__(self, text: str, add_special_tokens: bool = True) -> _Encoding:
        return _Encoding(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self._tok.id_to_token(i) for i in ids]


@functools.lru_cache(maxsize=8)
def load_tokenizer(folder: str) -> Any:
    """The tokenizer of a local folder (no download, no torch): its ``tokenizer.json`` with the
    ``tokenizers`` library (:class:`SavedFastTokenizer`) where there is one, else transformers'."""
    path = Path(folder)
    if (path / "tokenizer.json").is_file():
        try:
            return SavedFastTokenizer(path)
        except Exception:  # noqa: BLE001 - a file tokenizers cannot read: transformers decides
            pass
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def unknown_words(tokenizer: Any, text: str, known: dict[str, bool] | None = None) -> list[str]:
    """The words of ``text`` (lower-cased, in order, each once) that ``tokenizer`` does not know:
    mapped to its unknown token, or split mostly into single characters. ``known``: a memo of
    word -> unknown, shared between calls with the same tokenizer (a table's prompts repeat
    most of their words)."""
    memo = {} if known is None else known
    out: list[str] = []
    for word in dict.fromkeys(_WORD.findall(text.lower())):
        if word not in memo:
            memo[word] = _unknown(tokenizer, word)
        if memo[word]:
            out.append(word)
    return out


def _unknown(tokenizer: Any, word: str) -> bool:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if not ids:
        return False
    unk = getattr(tokenizer, "unk_token_id", None)
    if unk is not None and unk in ids:
        return True
    if len(word) < 2 or len(ids) < 2:
        return False
    pieces = [p.replace("</w>", "") for p in tokenizer.convert_ids_to_tokens(ids)]
    return sum(len(p) <= 1 for p in pieces) * 2 > len(pieces)


def _names_a_digit(name: str) -> bool:
    from normguide.evaluation.judges import digit_index  # numpy only

    try:
        digit_index(name)
    except ValueError:
        return False
    return True


def drawing_warnings(model: str, concepts: Iterable[Any], prompt_template: str) -> list[str]:
    """One line per concept that ``model`` cannot draw as asked (see the module's docstring);
    ``concepts`` are :class:`~normguide.data.schema.Concept` rows (``concept_id``, ``name``,
    ``resolved_prompt``). Empty when all is well or the model's tokenizer cannot be read here."""
    concepts = list(concepts)
    out: list[str] = []
    folder = tokenizer_dir(model)
    tokenizer = None
    if folder is not None and folder.is_dir():
        try:
            tokenizer = load_tokenizer(str(folder))
        except Exception:  # noqa: BLE001 - a model we cannot read is reported when it loads, not here
            tokenizer = None
    known: dict[str, bool] = {}
    for c in concepts:
        prompt = c.resolved_prompt(prompt_template)
        if tokenizer is not None and (words := unknown_words(tokenizer, prompt, known)):
            out.append(f"concept {c.concept_id!r}: the model's tokenizer does not know "
                       f"{', '.join(repr(w) for w in words)} (prompt {prompt!r}), so the model cannot "
                       "draw what they name")
        if model == "demo" and not _names_a_digit(c.name):
            out.append(f"concept {c.concept_id!r}: the demo model draws only handwritten digits and "
                       f"{c.name!r} names none, so its images will be digits; use --model <checkpoint>")
    return out


__all__ = ["SavedFastTokenizer", "drawing_warnings", "load_tokenizer", "tokenizer_dir", "unknown_words"]
