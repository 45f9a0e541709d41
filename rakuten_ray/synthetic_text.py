"""Listing text of the synthetic catalogue: titles and descriptions as sellers write them.

Each class has its own word lists (nouns, qualifiers, brands, units, phrases) and names the
family pools it shares with its neighbours; generic words and sentences carry no class signal.
They are data, in ``rakuten_ray/data/synthetic_vocabulary.json``. Units and phrases are
templates whose ``{i}``, ``{n}``, ``{n2}``, ``{y}``, ``{w}``, ``{h}``, ``{d}``, ``{dd}`` and
``{mm}`` take random numbers (:func:`_fill`).

Text carries a strong but imperfect class signal: neighbouring classes share vocabulary and
some titles are written mostly in a neighbour's words.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from rakuten_ray.catalog import CLASS_CODES
from rakuten_ray.data import read_json

EMPTY_DESCRIPTION_RATE = 0.35
#: Share of listings written mostly in a neighbouring class's words: the main text difficulty knob.
CONFUSED_LISTING_RATE = 0.15


@dataclass(frozen=True)
class _ClassText:
    """Word lists of one class; ``families`` name the pools it shares with its neighbours."""

    families: tuple[str, ...]
    nouns: tuple[str, ...]
    qualifiers: tuple[str, ...]
    brands: tuple[str, ...]
    units: tuple[str, ...]
    phrases: tuple[str, ...]


_VOCABULARY = read_json("synthetic_vocabulary.json")
#: Pools shared by neighbouring classes; they are what makes neighbours hard to tell apart.
_FAMILY_WORDS: dict[str, tuple[str, ...]] = {
    family: tuple(words) for family, words in _VOCABULARY["families"].items()
}
#: Words any product may carry; they add length without class signal.
_GENERIC_WORDS: tuple[str, ...] = tuple(_VOCABULARY["generic_words"])
_GENERIC_SENTENCES: tuple[str, ...] = tuple(_VOCABULARY["generic_sentences"])
_CLASS_TEXT: dict[int, _ClassText] = {
    int(code): _ClassText(**{field: tuple(words) for field, words in lists.items()})
    for code, lists in _VOCABULARY["classes"].items()
}

#: Classes that share a family pool are neighbours; confused listings borrow their words.
_NEIGHBOURS: dict[int, tuple[int, ...]] = {
    code: tuple(
        other
        for other in CLASS_CODES
        if other != code and set(_CLASS_TEXT[code].families) & set(_CLASS_TEXT[other].families)
    )
    for code in CLASS_CODES
}

_HTML_ENTITIES = {"é": "&eacute;", "è": "&egrave;", "à": "&agrave;", "'": "&#39;"}


def _fill(template: str, rnd: random.Random) -> str:
    """Replace the number placeholders of a unit or phrase template."""
    if "{" not in template:
        return template
    return template.format(
        i=rnd.randint(2, 12),
        n=rnd.randint(10, 999),
        n2=rnd.randint(12, 60),
        y=rnd.randint(1850, 2023),
        w=rnd.randrange(20, 260, 10),
        h=rnd.randrange(20, 260, 10),
        d=f"{rnd.uniform(0.5, 25):.1f}",
        dd=f"{rnd.randint(1, 28):02d}",
        mm=f"{rnd.randint(1, 12):02d}",
    )


def _pick(rnd: random.Random, words: Sequence[str]) -> str:
    return _fill(rnd.choice(words), rnd)


def _family_word(rnd: random.Random, spec: _ClassText) -> str:
    return rnd.choice(_FAMILY_WORDS[rnd.choice(spec.families)])


def _noise_word(rnd: random.Random) -> str:
    """A word from a random class, so that no single word is a perfect class marker."""
    return _pick(rnd, _CLASS_TEXT[rnd.choice(CLASS_CODES)].qualifiers)


def _title_words(rnd: random.Random, spec: _ClassText) -> list[str]:
    """Core words of a title: a noun, a few qualifiers and shared words, maybe a brand and unit."""
    words = [_pick(rnd, spec.nouns)]
    words += [_pick(rnd, spec.qualifiers) for _ in range(rnd.randint(0, 2))]
    words += [_family_word(rnd, spec) for _ in range(rnd.randint(0, 2))]
    if rnd.random() < 0.4:
        words.append(_pick(rnd, spec.nouns))
    if rnd.random() < 0.5:
        words.append(_pick(rnd, spec.units))
    rnd.shuffle(words)
    if rnd.random() < 0.6:
        words.insert(0 if rnd.random() < 0.5 else len(words), rnd.choice(spec.brands))
    return words


def _with_typo(rnd: random.Random, word: str) -> str:
    """Swap two adjacent letters, the commonest typing slip."""
    if len(word) < 4:
        return word
    at = rnd.randrange(len(word) - 1)
    return word[:at] + word[at + 1] + word[at] + word[at + 2 :]


def _roughen(rnd: random.Random, words: list[str]) -> list[str]:
    """Add off-class words, generic words and typos, like sellers' real listings."""
    words = list(words)
    for pool_word in (_noise_word, lambda r: r.choice(_GENERIC_WORDS)):
        if rnd.random() < 0.3:
            words.insert(rnd.randint(0, len(words)), pool_word(rnd))
    return [_with_typo(rnd, w) if rnd.random() < 0.03 else w for w in words]


def _own_words(rnd: random.Random, spec: _ClassText) -> list[str]:
    """One or two words of a row's own class, slipped into a listing written in other words."""
    return [
        _family_word(rnd, spec) if rnd.random() < 0.5 else _pick(rnd, spec.qualifiers)
        for _ in range(rnd.randint(1, 2))
    ]


def _make_title(rnd: random.Random, voice: _ClassText, own: _ClassText) -> str:
    words = _title_words(rnd, voice)
    if voice is not own:
        words[rnd.randint(0, len(words)) : 0] = _own_words(rnd, own)
    separator = rnd.choice((" ", " ", " ", " - ", " / ", ", "))
    title = separator.join(_roughen(rnd, words))
    return title.title() if rnd.random() < 0.6 else title[:1].upper() + title[1:]


def _sentence(rnd: random.Random, spec: _ClassText) -> str:
    """One description sentence from a small set of shapes."""
    shape = rnd.randrange(6)
    if shape == 0:
        return (
            f"{_pick(rnd, spec.nouns).capitalize()} {_pick(rnd, spec.qualifiers)} "
            f"de la marque {rnd.choice(spec.brands)}."
        )
    if shape == 1:
        return f"{_pick(rnd, spec.phrases).capitalize()}."
    if shape == 2:
        return f"Ce produit {_family_word(rnd, spec)} est idéal : {_pick(rnd, spec.phrases)}."
    if shape == 3:
        return (
            f"Caractéristiques : {_pick(rnd, spec.units)}, {_pick(rnd, spec.qualifiers)}, "
            f"{_family_word(rnd, spec)}."
        )
    if shape == 4:
        return rnd.choice(_GENERIC_SENTENCES)
    return " ".join(_roughen(rnd, _title_words(rnd, spec))).capitalize() + "."


def _as_html(rnd: random.Random, sentences: list[str]) -> str:
    """Mark sentences up the way shop back-offices do: paragraphs, line breaks or a list."""
    style = rnd.randrange(4)
    if style == 0:
        return "".join(f"<p>{s}</p>" for s in sentences)
    if style == 1:
        return "<br />".join(sentences)
    if style == 2 and len(sentences) > 2:
        items = "".join(f"<li>{s}</li>" for s in sentences[1:])
        return f"{sentences[0]}<ul>{items}</ul>"
    return " ".join(sentences)


def _escape_some(rnd: random.Random, text: str) -> str:
    """Write accents, apostrophes, ampersands and spaces as HTML entities, as some feeds do."""
    for char, entity in _HTML_ENTITIES.items():
        text = text.replace(char, entity)
    text = text.replace(" & ", " &amp; ")
    return text.replace(" ", "&nbsp;", rnd.randint(0, 2))


def _make_description(rnd: random.Random, voice: _ClassText, own: _ClassText) -> str:
    if rnd.random() < EMPTY_DESCRIPTION_RATE:
        return ""
    # A skewed length: most descriptions are short, a few run long.
    sentences = [_sentence(rnd, voice) for _ in range(1 + int(rnd.expovariate(0.35)))]
    if voice is not own:
        sentences.append(" ".join(_own_words(rnd, own)).capitalize() + ".")
    text = _as_html(rnd, sentences) if rnd.random() < 0.45 else " ".join(sentences)
    return _escape_some(rnd, text) if rnd.random() < 0.25 else text


def _make_row_text(rnd: random.Random, code: int) -> tuple[str, str]:
    """Title and description of one row.

    Some listings are written mostly in a neighbouring class's words (a phone case sold as a
    "gaming accessory", a book listed as a magazine) with only a few words of their own class:
    these are the rows that keep text classification from being trivial.
    """
    own = _CLASS_TEXT[code]
    voice = own
    if rnd.random() < CONFUSED_LISTING_RATE:
        voice = _CLASS_TEXT[rnd.choice(_NEIGHBOURS[code])]
    return _make_title(rnd, voice, own), _make_description(rnd, voice, own)


def listing_texts(rnd: random.Random, codes: Sequence[int]) -> tuple[list[str], list[str]]:
    """Titles and descriptions of rows of classes ``codes``, in order, all drawn from ``rnd``."""
    titles, descriptions = [], []
    for code in codes:
        title, description = _make_row_text(rnd, code)
        titles.append(title)
        descriptions.append(description)
    return titles, descriptions
