"""Text preparation: cleaning product fields and joining them through a template.

The catalogue's designations and descriptions are scraped HTML: tags, entities (sometimes
escaped twice), scripts, control characters and the odd megabyte-long description. Every
model sees text that went through :func:`clean_text`, at training and scoring alike.
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

#: Longest cleaned field, in characters. Models truncate to a few hundred tokens anyway; the
#: cap bounds the memory and time spent on a pathological (say 1 MB) description.
MAX_TEXT_CHARS = 10_000

#: Raw input kept before any regex work, as a multiple of :data:`MAX_TEXT_CHARS`: enough
#: headroom for markup and entities that cleaning removes, while bounding the work.
RAW_CAP_FACTOR = 4

#: The two fields a template may name.
PLACEHOLDERS: tuple[str, ...] = ("designation", "description")

# A failed attempt scans no further than the next "<", and a started script, style or
# comment always matches, so cleaning stays linear in the capped input length.
# An unclosed script, style or comment runs to the end of the text, as in a browser.
_SCRIPT_RE = re.compile(r"<(script|style)\b[^<>]*>.*?(?:</\1\s*>|\Z)", re.IGNORECASE | re.DOTALL)
_COMMENT_RE = re.compile(r"<!--.*?(?:-->|\Z)", re.DOTALL)
# Only tag-shaped text counts: "5 < 6 cm" or "<3" survive.
_TAG_RE = re.compile(r"</?[A-Za-z][^<>]*>|<![^<>]*>")
# Control characters that are not whitespace, and lone surrogates (not encodable as UTF-8).
_DROPPED_CHARS = "".join(
    chr(c) for c in range(0xA0) if unicodedata.category(chr(c)) == "Cc" and not chr(c).isspace()
)
_DROP_RE = re.compile(f"[{re.escape(_DROPPED_CHARS)}\ud800-\udfff]")
# Matches exactly the characters for which str.isspace() is true, control whitespace included.
_SPACE_RE = re.compile(r"\s+")
_FIELD_RE = re.compile(r"\{([^{}]*)\}")


def _as_str(value: object) -> str:
    if isinstance(value, str):
        return value
    if value is None or (pd.api.types.is_scalar(value) and pd.isna(value)):
        return ""
    return str(value)


def _unescape(text: str) -> str:
    # Twice, for double-escaped text such as "&amp;eacute;"; a fixed count bounds the work,
    # and deeper escaping is rare enough to keep one level.
    if "&" not in text:
        return text
    return html.unescape(html.unescape(text))


def _strip_markup(text: str) -> str:
    if "<" not in text:
        return text
    text = _SCRIPT_RE.sub(" ", text)
    text = _COMMENT_RE.sub(" ", text)
    # A space, not nothing, so "a<br>b" stays two words.
    return _TAG_RE.sub(" ", text)


def _collapse_spaces(text: str) -> str:
    return _SPACE_RE.sub(" ", text).strip()


def clean_text(value: object) -> str:
    """Turn one raw product field into plain, normalised text.

    Steps: missing values (``None``, NaN, ``pd.NA``) become ``""`` and other non-strings
    ``str(value)``; the raw text is cut to ``RAW_CAP_FACTOR * MAX_TEXT_CHARS`` characters;
    HTML entities are decoded (twice at most); ``<script>``/``<style>`` blocks and comments
    are removed with their content and other tags replaced by a space; control characters
    and lone surrogates are dropped; the text is NFC-normalised; whitespace runs become one
    space; the result is stripped and cut to :data:`MAX_TEXT_CHARS`.

    Never raises for a ``str``.
    """
    text = _as_str(value)[: RAW_CAP_FACTOR * MAX_TEXT_CHARS]
    text = _strip_markup(_unescape(text))
    text = _DROP_RE.sub("", text)
    text = _collapse_spaces(unicodedata.normalize("NFC", text))
    return text[:MAX_TEXT_CHARS].rstrip()


@dataclass(frozen=True)
class TextTemplate:
    """A validated template naming ``{designation}`` and/or ``{description}``.

    Substitution is literal, never ``str.format``, so braces inside product text are harmless.
    The rendered text has its whitespace collapsed and stripped, but the template's own
    markers are always kept: with an empty description, ``"{designation} [SEP] {description}"``
    gives ``"title [SEP]"``, so a model sees the same structure on every row.

    Raises:
        ValueError: the template names another placeholder or has an unmatched brace.
    """

    template: str
    _parts: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        parts: list[str] = []
        position = 0
        for match in _FIELD_RE.finditer(self.template):
            name = match.group(1)
            if name not in PLACEHOLDERS:
                raise ValueError(
                    f"template {self.template!r}: unknown placeholder {{{name}}}; "
                    f"allowed: {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
                )
            parts.extend((self._literal(self.template[position : match.start()]), name))
            position = match.end()
        parts.append(self._literal(self.template[position:]))
        # Even positions hold literal text, odd positions placeholder names.
        object.__setattr__(self, "_parts", tuple(parts))

    def _literal(self, text: str) -> str:
        for brace in "{}":
            if brace in text:
                raise ValueError(f"template {self.template!r}: stray {brace!r} in {text!r}")
        return _DROP_RE.sub("", text)

    def render(self, designation: object, description: object) -> str:
        """Fill the template with the cleaned fields."""
        fields = {"designation": clean_text(designation), "description": clean_text(description)}
        pieces = [part if i % 2 == 0 else fields[part] for i, part in enumerate(self._parts)]
        # NFC again: a template's literal text may start with a combining mark.
        return _collapse_spaces(unicodedata.normalize("NFC", "".join(pieces)))


def render_text(template: str, designation: object, description: object) -> str:
    """Clean both fields and join them through ``template`` (see :class:`TextTemplate`)."""
    return TextTemplate(template).render(designation, description)


def prepare_texts(
    designations: Sequence[object], descriptions: Sequence[object], template: str
) -> list[str]:
    """Render a batch of rows; the template is validated once for the whole batch.

    Raises:
        ValueError: the sequences differ in length, or the template is invalid.
    """
    if len(designations) != len(descriptions):
        raise ValueError(f"{len(designations)} designations but {len(descriptions)} descriptions")
    compiled = TextTemplate(template)
    return [compiled.render(d, e) for d, e in zip(designations, descriptions, strict=True)]
