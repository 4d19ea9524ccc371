"""Text that comes from users: prompt templates and the names that are printed and drawn.

Prompt templates (``prompt_template`` in the config, the CLIP judge's class-prompt template):
the only fields are those in :data:`TEMPLATE_FIELDS` (``{name}``), each substituted as plain
text. ``{{`` and ``}}`` are literal braces. Everything else :meth:`str.format` would do is
refused, naming the template: attribute access (``{name.upper}``), indexing (``{name[0]}``),
conversions (``{name!r}``), format specs (``{name:>200000000}``), positional fields (``{}``,
``{0}``) and unknown fields. A concept's own ``prompt`` is not a template: it is used verbatim.

Names and prompts (the concept table's ``name`` and ``prompt``, the config's
``prompt_template``) may not contain control or format characters: Unicode categories Cc
(newline, tab, NUL, ESC, ...), Cf (bidi overrides such as U+202E, zero-width spaces, ...; the
joiners U+200C/U+200D are allowed, several scripts and emoji need them) and the line and
paragraph separators (Zl, Zp). :func:`control_characters` finds them; :func:`printable`
escapes them in text of older runs before it is printed or drawn.
"""

from __future__ import annotations

import unicodedata
from string import Formatter

from normguide.errors import InputError

#: The fields a prompt template may use.
TEMPLATE_FIELDS = ("name",)

#: Format characters that are allowed in names (zero-width non-joiner and joiner).
_ALLOWED_FORMAT = frozenset("\u200c\u200d")
_REFUSED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp"})


class TemplateError(InputError):
    """A prompt template uses more than plain ``{name}`` substitution."""


def _parse(template: str, where: str) -> list[tuple[str, str | None]]:
    """(literal text, field name or None) pieces of ``template``, or TemplateError."""
    if not isinstance(template, str):
        raise TemplateError(f"{where} must be a string, got {type(template).__name__}")
    pieces = []
    try:
        parsed = list(Formatter().parse(template))
    except ValueError as exc:  # a lone '{' or '}'
        raise TemplateError(f"{where} {_short(template)} is not a valid template ({exc}); "
                            "write {{ and }} for literal braces") from None
    allowed = ", ".join("{" + f + "}" for f in TEMPLATE_FIELDS)
    for literal, field, spec, conversion in parsed:
        if field is None:
            pieces.append((literal, None))
            continue
        written = "{" + field + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
        if field not in TEMPLATE_FIELDS or conversion or spec:
            if field.split(".", 1)[0].split("[", 1)[0] in TEMPLATE_FIELDS and field not in TEMPLATE_FIELDS:
                why = "attribute access and indexing are not allowed"
            elif conversion:
                why = "conversions (!r, !s, !a) are not allowed"
            elif spec:
                why = "format specs are not allowed"
            else:
                why = "it is not a known field"
            raise TemplateError(f"{where} {_short(template)} uses {printable(written[:80])}: {why}; "
                                f"the only field is {allowed}, substituted as plain text")
        pieces.append((literal, field))
    return pieces


def check_template(template: str, *, where: str = "prompt_template") -> str:
    """``template`` if it uses only plain ``{name}`` fields (and has no control characters),
    else :class:`TemplateError` naming ``where``."""
    _parse(template, where)
    if bad := control_characters(template):
        raise TemplateError(f"{where} {_short(template)} contains the control character {describe(bad[0])}")
    return template


def render_template(template: str, *, where: str = "prompt_template", **values: str) -> str:
    """``template`` with each ``{field}`` replaced by ``values[field]`` as plain text."""
    out = []
    for literal, field in _parse(template, where):
        out.append(literal)
        if field is not None:
            out.append(str(values[field]))
    return "".join(out)


def control_characters(text: str) -> list[str]:
    """The characters of ``text`` that names and prompts may not contain, in order."""
    return [ch for ch in text if unicodedata.category(ch) in _REFUSED_CATEGORIES and ch not in _ALLOWED_FORMAT]


def describe(ch: str) -> str:
    """``'\\u202e' (U+202E RIGHT-TO-LEFT OVERRIDE)``: a character as an escape and its name."""
    name = unicodedata.name(ch, "")
    return f"{ascii(ch)} (U+{ord(ch):04X}{' ' + name if name else ''})"


def printable(text: object) -> str:
    """``text`` with every control or format character escaped (``\\n``, ``\\u202e``), so
    printing or drawing it cannot move the cursor, reorder the line or break it."""
    s = str(text)
    bad = set(control_characters(s))
    return "".join(ascii(ch)[1:-1] if ch in bad else ch for ch in s) if bad else s


def _short(text: str, limit: int = 60) -> str:
    """A template quoted for an error line: escaped, cut after ``limit`` characters."""
    shown = text if len(text) <= limit else text[:limit] + "..."
    return ascii(shown) if control_characters(shown) else repr(shown)
