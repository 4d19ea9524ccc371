"""Can the model draw what the concept table asks for? Warnings, before any model work.

Two checks, both without torch (the tokenizer is read from the model's local folder with
transformers' tokenizer classes, which need neither torch nor diffusers):

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


@functools.lru_cache(maxsize=8)
def load_tokenizer(folder: str) -> Any:
    """transformers' tokenizer of a local folder (no download).

    ``AutoTokenizer`` imports torch (through transformers' model configuration code), so the
    tokenizer classes are taken from the modules that do not: the fast tokenizer of a
    ``tokenizer.json`` (what transformers itself loads when one is there), or CLIP's tokenizer for a
    CLIP folder without one (a vocabulary and merges, as SD 1.x checkpoints ship it). Any other
    folder falls back to ``AutoTokenizer``, torch and all."""
    path = Path(folder)
    if (path / "tokenizer.json").is_file():
        from transformers.tokenization_utils_tokenizers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(folder, local_files_only=True)
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file() and _tokenizer_class(path).startswith("CLIP"):
        from transformers.models.clip.tokenization_clip import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def _tokenizer_class(folder: Path) -> str:
    import json

    try:
        return str(json.loads((folder / "tokenizer_config.json").read_text()).get("tokenizer_class") or "")
    except (OSError, ValueError):
        return ""


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
                       f"draw what {'they name' if len(words) > 1 else 'it names'}")
        if model == "demo" and not _names_a_digit(c.name):
            out.append(f"concept {c.concept_id!r}: the demo model draws only handwritten digits and "
                       f"{c.name!r} names none, so its images will be digits; use --model <checkpoint>")
    return out


__all__ = ["drawing_warnings", "load_tokenizer", "tokenizer_dir", "unknown_words"]
