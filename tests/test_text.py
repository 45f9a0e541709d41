"""Tests for rakuten_ray.text: cleaning messy catalogue fields and rendering templates."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

from rakuten_ray.text import (
    MAX_TEXT_CHARS,
    TextTemplate,
    clean_text,
    prepare_texts,
    render_text,
)

TITLE_TEMPLATE = "[TITRE] {designation} [DESC] {description}"
SEP_TEMPLATE = "{designation} [SEP] {description}"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("<p>Coussin en lin</p><br />Lavable à 30°", "Coussin en lin Lavable à 30°"),
        ("Caf&eacute; cr&egrave;me &amp; th&#233;", "Café crème & thé"),
        ("Caf&amp;eacute; double &amp;amp; &amp;lt;b&amp;gt;gras", "Café double & gras"),
        ("&amp;amp;eacute; triple", "&eacute; triple"),
        ("&lt;p&gt;Échappé&lt;/p&gt;", "Échappé"),
        ("Avant<script type='text/javascript'>var x = '<b>';</script>après", "Avant après"),
        ("a<STYLE>p { color: red }</STYLE>b", "a b"),
        ("a<!-- commentaire <b> -->b", "a b"),
        ("texte<script>jamais fermé", "texte"),
        ("Taille < 5 cm et > 2 cm, <3", "Taille < 5 cm et > 2 cm, <3"),
        ("Robe\x00 rouge\x07\x1b\x7f\x9f", "Robe rouge"),
        ("ligne 1\r\nligne 2\tfin\x0bvt\x0cff\x85nel\u2028ls", "ligne 1 ligne 2 fin vt ff nel ls"),
        ("  espaces\u00a0insécables\u3000  ", "espaces insécables"),
        ("Jouet 🧸🎁 pour enfant 👨\u200d👩\u200d👧", "Jouet 🧸🎁 pour enfant 👨\u200d👩\u200d👧"),
        ("كتاب باللغة العربية ספר בעברית", "كتاب باللغة العربية ספר בעברית"),
        ("Cafe\u0301", "Café"),  # combining accent composed (NFC)
        ("lone \ud800 surrogate", "lone surrogate"),
        ("&#0;&#x1;&#128512;", "\ufffd😀"),
        ("", ""),
        ("   \n\t ", ""),
    ],
)
def test_clean_text_messy_rows(raw: str, expected: str) -> None:
    assert clean_text(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, ""),
        (float("nan"), ""),
        (np.float32("nan"), ""),
        (np.nan, ""),
        (pd.NA, ""),
        (pd.NaT, ""),
        (42, "42"),
        (np.int64(7), "7"),
        (1.5, "1.5"),
        (True, "True"),
    ],
)
def test_clean_text_non_strings(raw: object, expected: str) -> None:
    assert clean_text(raw) == expected


def test_clean_text_caps_a_megabyte_quickly() -> None:
    huge = "<p>Très long &amp; répétitif</p>\n" * 40_000  # about 1.3 MB
    start = time.perf_counter()
    out = clean_text(huge)
    elapsed = time.perf_counter() - start
    assert len(out) <= MAX_TEXT_CHARS
    assert len(out) > MAX_TEXT_CHARS - 50
    assert out.startswith("Très long & répétitif Très long")
    assert out == out.strip()
    assert elapsed < 0.5


@pytest.mark.parametrize(
    "hostile",
    ["<" * 200_000, "<script" * 50_000, "<!--" * 100_000, "<a" * 100_000, "&amp;" * 100_000],
)
def test_clean_text_hostile_markup_is_fast(hostile: str) -> None:
    start = time.perf_counter()
    out = clean_text(hostile)
    assert time.perf_counter() - start < 0.5
    assert len(out) <= MAX_TEXT_CHARS


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        (TITLE_TEMPLATE, "[TITRE] Lampe de chevet [DESC] Abat-jour en lin"),
        (SEP_TEMPLATE, "Lampe de chevet [SEP] Abat-jour en lin"),
    ],
)
def test_render_text_original_templates(template: str, expected: str) -> None:
    assert render_text(template, "Lampe  de chevet", "<p>Abat-jour en lin</p>") == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [(TITLE_TEMPLATE, "[TITRE] Lampe [DESC]"), (SEP_TEMPLATE, "Lampe [SEP]")],
)
@pytest.mark.parametrize("empty", [None, float("nan"), "", "  <br/> "])
def test_render_text_empty_description_keeps_marker(
    template: str, expected: str, empty: object
) -> None:
    assert render_text(template, "Lampe", empty) == expected


def test_render_text_empty_designation_leaves_single_spaces() -> None:
    assert render_text(TITLE_TEMPLATE, None, "desc") == "[TITRE] [DESC] desc"


def test_braces_in_product_text_are_harmless() -> None:
    out = render_text(SEP_TEMPLATE, "Mug {description} {0} {}", "{designation} {{x}} %s")
    assert out == "Mug {description} {0} {} [SEP] {designation} {{x}} %s"


def test_template_may_repeat_or_omit_placeholders() -> None:
    assert render_text("{designation}: {designation}", "a", "b") == "a: a"
    assert render_text("seul {description}", "a", "b") == "seul b"


@pytest.mark.parametrize(
    ("template", "named"),
    [
        ("{designation} {titre}", "{titre}"),
        ("{designation} {0}", "{0}"),
        ("{designation} {}", "{}"),
        ("{Designation}", "{Designation}"),
        ("{designation!r}", "{designation!r}"),
        ("{designation:>10}", "{designation:>10}"),
        ("{designation", "'{'"),
        ("{designation}}", "'}'"),
        ("{{designation}}", "'{'"),
        ("desc} {description}", "'}'"),
    ],
)
def test_invalid_templates_are_refused_by_name(template: str, named: str) -> None:
    with pytest.raises(ValueError, match="template") as info:
        TextTemplate(template)
    assert named in str(info.value)


def test_prepare_texts_matches_render_text() -> None:
    designations = pd.Series(["Lampe", None, 12, "Mug &amp; <b>tasse</b>"])
    descriptions = [float("nan"), "Seulement la description", "x", None]
    out = prepare_texts(designations, descriptions, SEP_TEMPLATE)
    assert out == [
        render_text(SEP_TEMPLATE, d, e) for d, e in zip(designations, descriptions, strict=True)
    ]
    assert out == [
        "Lampe [SEP]",
        "[SEP] Seulement la description",
        "12 [SEP] x",
        "Mug & tasse [SEP]",
    ]


def test_prepare_texts_refuses_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match="2 designations but 1 descriptions"):
        prepare_texts(["a", "b"], ["c"], SEP_TEMPLATE)


def test_prepare_texts_validates_template_even_when_empty() -> None:
    with pytest.raises(ValueError, match="unknown placeholder"):
        prepare_texts([], [], "{nom}")
