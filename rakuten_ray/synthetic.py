"""Synthetic demo catalogue in the challenge's raw layout.

The demo cannot ship the real Rakuten data, so this module writes a stand-in with the same
files, columns, id ranges, class imbalance and defects (empty descriptions, HTML fragments,
missing and unreadable images). Text carries a strong but imperfect class signal: neighbouring
classes share vocabulary and some titles are written mostly in a neighbour's words. Images carry
a weaker, partly ambiguous signal (a palette and a shape family per class), so that text beats
image and fusion can beat both.

Every random choice comes from a stream derived from ``seed`` and, for images, the row number,
so the same arguments give byte-identical files however many worker processes draw the images.
"""

from __future__ import annotations

import colorsys
import io
import math
import multiprocessing
import os
import random
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image, ImageDraw

from rakuten_ray.catalog import (
    CLASS_CODES,
    IMAGE_SUBDIRS,
    LABEL_COLUMN,
    X_COLUMNS,
    X_TEST_FILE,
    X_TRAIN_FILE,
    Y_TRAIN_FILE,
    image_filename,
)

#: Labels of the test rows; the real challenge keeps them secret, the demo does not.
Y_TEST_FILE = "Y_test_labels.csv"

#: Share of each class in per cent, as in the real training set.
CLASS_SHARES: dict[int, float] = {
    10: 3.67, 40: 2.95, 50: 1.98, 60: 0.98, 1140: 3.15, 1160: 4.66, 1180: 0.90, 1280: 5.74,
    1281: 2.44, 1300: 5.94, 1301: 0.95, 1302: 2.93, 1320: 3.82, 1560: 5.97, 1920: 5.07,
    1940: 0.95, 2060: 5.88, 2220: 0.97, 2280: 5.61, 2403: 5.62, 2462: 1.67, 2522: 5.88,
    2582: 3.05, 2583: 12.02, 2585: 2.94, 2705: 3.25, 2905: 1.03,
}  # fmt: skip

IMAGE_SIZE = 500
JPEG_QUALITY = 85
EMPTY_DESCRIPTION_RATE = 0.35
MISSING_IMAGE_RATE = 0.02
UNREADABLE_IMAGE_RATE = 0.003
#: Share of listings written mostly in a neighbouring class's words: the main text difficulty knob.
CONFUSED_LISTING_RATE = 0.15
#: Share of images drawn entirely from another class's recipe: the main image difficulty knob.
AMBIGUOUS_IMAGE_RATE = 0.25

_PRODUCTID_RANGE = (10_000, 4_300_000_000)
_IMAGEID_RANGE = (1_000_000_000, 1_330_000_000)
# Stream keys keep the label, id, text and image draws independent of each other, so adding
# rows or skipping images never changes the other streams.
_STREAM_LABELS, _STREAM_IDS, _STREAM_DEFECTS, _STREAM_TEXT, _STREAM_IMAGE = range(5)


@dataclass(frozen=True)
class CatalogueSummary:
    """What :func:`generate_catalogue` wrote.

    Attributes:
        root: the catalogue folder.
        csv_files: X/Y files of the train and test splits.
        image_dirs: image folders (empty when images were skipped).
        train_rows: rows in the training files.
        test_rows: rows in the test files.
        missing_images: rows, over both splits, whose image file does not exist.
        unreadable_images: rows, over both splits, whose image file exists but is not a JPEG.
        elapsed_s: wall-clock seconds spent.
    """

    root: Path
    csv_files: tuple[Path, ...]
    image_dirs: tuple[Path, ...]
    train_rows: int
    test_rows: int
    missing_images: int
    unreadable_images: int
    elapsed_s: float


# --------------------------------------------------------------------------------------------
# Vocabularies
# --------------------------------------------------------------------------------------------


def _words(text: str) -> tuple[str, ...]:
    """Split a ``|``-separated word list (items may hold spaces)."""
    return tuple(item.strip() for item in text.split("|") if item.strip())


@dataclass(frozen=True)
class _ClassText:
    """Word lists of one class; ``families`` name the pools it shares with its neighbours."""

    families: tuple[str, ...]
    nouns: tuple[str, ...]
    qualifiers: tuple[str, ...]
    brands: tuple[str, ...]
    units: tuple[str, ...]
    phrases: tuple[str, ...]


def _text(
    families: str, nouns: str, qualifiers: str, brands: str, units: str, phrases: str
) -> _ClassText:
    return _ClassText(
        _words(families),
        _words(nouns),
        _words(qualifiers),
        _words(brands),
        _words(units),
        _words(phrases),
    )


#: Pools shared by neighbouring classes; they are what makes neighbours hard to tell apart.
_FAMILY_WORDS: dict[str, tuple[str, ...]] = {
    "lecture": _words(
        "livre|auteur|édition|pages|collection|lecture|histoire|volume|illustrations|couverture|"
        "tome|texte|récit|français|préface|numéro"
    ),
    "jeu video": _words(
        "jeu|jeux vidéo|pc|ps4|ps3|xbox|nintendo|switch|manette|console|gamer|gaming|joueur|"
        "import|version|wii"
    ),
    "jouet": _words(
        "jouet|enfant|figurine|jeu|cadeau|collection|personnage|plastique|ans|garçon|fille|"
        "univers|série|héros|kit"
    ),
    "jardin": _words(
        "jardin|extérieur|terrasse|résine|aluminium|bâche|étanche|été|eau|acier|pvc|balcon|"
        "pelouse|bleu|vert"
    ),
    "maison": _words(
        "maison|décoration|salon|chambre|coton|bois|design|intérieur|moderne|vintage|blanc|"
        "gris|style|couleur|déco"
    ),
    "bebe": _words(
        "bébé|naissance|enfant|doux|coton|mois|nourrisson|fille|garçon|éveil|confort|rose|maternité"
    ),
    "maison pratique": _words(
        "sachet|boîte|lot|bio|naturel|format|recharge|pack|qualité|goût|santé|quotidien"
    ),
    "bureau": _words(
        "bureau|école|papier|couleur|format|pages|rentrée|écriture|dessin|lot|cahier|noir"
    ),
}

#: Words any product may carry; they add length without class signal.
_GENERIC_WORDS = _words(
    "neuf|lot|cadeau|qualité|original|noir|blanc|rouge|bleu|taille unique|nouveau|pack|set|"
    "haute qualité|mini|grand|petit|premium|officiel|accessoire|modèle|promo|livraison gratuite|"
    "nouveauté|edition limitée|pas cher"
)

_GENERIC_SENTENCES = _words(
    "Livraison rapide et soignée.|Produit neuf, jamais utilisé.|Satisfait ou remboursé.|"
    "Envoi sous 48h.|Photo non contractuelle.|Garantie 2 ans.|Expédié depuis la France.|"
    "Très bon état général.|Article conforme à la description.|Emballage d'origine."
)

_CLASS_TEXT: dict[int, _ClassText] = {
    10: _text(
        "lecture",
        "livre ancien|gravure|manuscrit|almanach|mémoires|traité|correspondance|édition originale|"
        "annales|bulletin",
        "ancien|rare|annoté|jauni|relié cuir|dédicacé|épuisé|in-8|in-12|exemplaire numéroté",
        "Hachette|Larousse|Plon|Calmann-Lévy|Garnier|Hetzel|Mercure de France",
        "{n} pages|{y}|édition de {y}|tome {i}",
        "imprimé en {y}|quelques rousseurs|reliure d'époque|pour bibliophiles",
    ),
    2705: _text(
        "lecture",
        "roman|essai|biographie|guide|recueil de nouvelles|thriller|poésie|témoignage|saga",
        "broché|grand format|poche|nouvelle édition|inédit|illustré|prix littéraire|best-seller",
        "Gallimard|Actes Sud|Albin Michel|Seuil|Fayard|Points|Folio|Robert Laffont",
        "{n} pages|tome {i}|{y}",
        "un roman bouleversant|par l'auteur du best-seller|une enquête haletante",
    ),
    2403: _text(
        "lecture|bureau",
        "lot de mangas|lot de bd|série complète|lot de romans|lot de magazines|coffret|"
        "intégrale|albums",
        "tomes|complet|occasion|bon état|vf|édition originale|souple",
        "One Piece|Naruto|Astérix|Tintin|Spirou|Dragon Ball|Blake et Mortimer|Largo Winch",
        "tome {i} à {n2}|lot de {i}|{i} volumes",
        "tomes en bon état|vendu en lot|série à compléter",
    ),
    2280: _text(
        "lecture",
        "magazine|revue|hebdomadaire|mensuel|journal|hors-série|supplément|fascicule|numéro",
        "ancien numéro|spécial|complet|illustré|d'époque|trimestriel",
        "Paris Match|Le Point|L'Express|Géo|Science et Vie|Télérama|Historia|Spirou Magazine",
        "n° {n}|du {dd}/{mm}/{y}|n°{i}|{y}",
        "numéro spécial consacré à|dossier complet sur|avec son supplément",
    ),
    40: _text(
        "jeu video",
        "jeu pc|cd-rom|jeu ps2|jeu wii|bande originale|dvd-rom|jeu gamecube|cd audio",
        "neuf sous blister|version française|import allemand|collector|complet|pal|boîte d'origine",
        "Ubisoft|Electronic Arts|Sega|Capcom|Konami|Fifa|Need for Speed|Sonic|Rayman",
        "{y}|pegi {i}|vol. {i}",
        "un jeu culte|avec notice|jouable en solo et multijoueur",
    ),
    2462: _text(
        "jeu video",
        "pack console|lot de jeux|xbox 360|ps3|nintendo ds|game boy|console + manette|wii u",
        "occasion|bon état|testé|avec boîte|fonctionne|console + {i} jeux",
        "Sony|Microsoft|Nintendo|Sega",
        "{i} jeux|{n} go|{i} manettes",
        "console testée et fonctionnelle|vendu avec câbles|quelques rayures",
    ),
    2905: _text(
        "jeu video",
        "jeu en téléchargement|season pass|extension|dlc|édition complète|code steam|"
        "clé d'activation",
        "pc|mac|dématérialisé|deluxe|gold edition|goty",
        "Steam|Ubisoft|Paradox|Focus|Bethesda|Anno|Motogp",
        "{y}|édition {y}",
        "code envoyé par email|téléchargement immédiat|configuration minimale requise",
    ),
    50: _text(
        "jeu video",
        "manette|casque gaming|chargeur|housse|câble|volant|support|stick|batterie|"
        "protection écran|fauteuil gaming",
        "sans fil|bluetooth|filaire|rgb|compatible ps4|compatible switch|ergonomique",
        "Sony|Nacon|Thrustmaster|Turtle Beach|Hori|Razer|Dualshock",
        "{n} mah|{d} m|lot de {i}",
        "compatible avec toutes les consoles|prise en main confortable|charge rapide",
    ),
    60: _text(
        "jeu video",
        "console|mini console|console portable|rétro console|lecteur de jeux|console de salon",
        "8 bits|portable|hdmi|jeux intégrés|écran couleur|double joueur|rétro",
        "Nintendo|Sony|Sega|Atari|Snes|Nes",
        "{n} jeux intégrés|{d} pouces|{i} go",
        "des centaines de jeux classiques|se branche sur la télévision|écran haute définition",
    ),
    1140: _text(
        "jouet",
        "figurine|pop|bobble head|statuette|magnet|porte-clés|goodies|buste|mug",
        "vinyl|collector|officielle|peinte|articulée|édition limitée",
        "Funko|Marvel|Star Wars|Harry Potter|Naruto|Disney|Dc Comics",
        "{n} cm|n° {n}|{i} cm",
        "produit officiel sous licence|pour les fans|figurine à collectionner",
    ),
    1180: _text(
        "jouet|lecture",
        "figurine à peindre|socle|escouade|écran du meneur|livre de règles|miniature|régiment|"
        "jeu de rôle",
        "plomb|résine|non peinte|{i} mm|métal|fantastique",
        "Warhammer|Games Workshop|Donjons et Dragons|Age of Sigmar|Mournblade|Battletech",
        "{i} figurines|{n} mm|{y}",
        "figurines à assembler et à peindre|pour vos parties de jeu de rôle",
    ),
    1280: _text(
        "jouet|bebe",
        "jouet|peluche|poupée|voiture miniature|puzzle|circuit|déguisement|jeu de construction|"
        "doudou|robot",
        "éducatif|musical|lumineux|dès {i} ans|interactif|en bois|télécommandé",
        "Lego|Playmobil|Vtech|Hasbro|Mattel|Disney|Barbie|Hot Wheels",
        "{n} pièces|{i} ans|{n} cm",
        "pour les enfants dès {i} ans|développe la motricité|idéal pour jouer en famille",
    ),
    1281: _text(
        "jouet",
        "jeu de société|jeu de cartes|jeu de plateau|dés|pions|extension|jeu d'ambiance|quiz",
        "familial|stratégie|coopératif|ambiance|{i} joueurs|réflexion",
        "Asmodee|Hasbro|Monopoly|Dixit|Catan|Iello|Gigamic|Cluedo",
        "{i} joueurs|dès {i} ans|{n} cartes",
        "pour {i} à {n2} joueurs|parties de {n} minutes|des heures de jeu en famille",
    ),
    1160: _text(
        "jouet",
        "carte|booster|deck|display|carte rare|holo|sticker|classeur|carte de collection",
        "rare|holo|vf|mint|commune|foil|promo|ultra rare",
        "Pokemon|Magic|Yu-Gi-Oh|Panini|Adrenalyn|Dragon Ball Super|Wakfu",
        "{i}/{n}|n° {n}|{n}/{n2}",
        "carte en excellent état|sortie de booster|protégée sous sleeve",
    ),
    1300: _text(
        "jouet",
        "drone|maquette|hélice|quadricoptère|avion rc|batterie lipo|télécommande|servo|hélicoptère",
        "fpv|caméra hd|2.4g|6 axes|wifi|radiocommandé|pliable",
        "Dji|Parrot|Revell|Tamiya|Syma|Heller",
        "{n} mah|1/{n}|{i}mp|{n} m",
        "stabilisation sur {i} axes|autonomie de {n} minutes|maquette à monter",
    ),
    1302: _text(
        "jouet|jardin",
        "trampoline|balançoire|ballon|cerf-volant|slime|squishy|pistolet à eau|toboggan|"
        "jeu de plein air|bulles",
        "extérieur|gonflable|antistress|géant|parfumé|lumineux",
        "Bestway|Intex|Smoby|Decathlon|Wham-O",
        "{n} cm|{n} ml|{d} m",
        "pour s'amuser au jardin|jeu de plein air pour toute la famille",
    ),
    1320: _text(
        "bebe|jouet",
        "poussette|siège auto|biberon|tapis d'éveil|lit parapluie|chaise haute|gigoteuse|"
        "coffre à jouets|porte-bébé",
        "réglable|pliable|groupe 0+|ergonomique|sécurisé|anti-colique",
        "Chicco|Bébé Confort|Babymoov|Tigex|Safety 1st",
        "{n} ml|{d} kg|{i} en 1",
        "de la naissance à {i} ans|se plie en un geste|facile à nettoyer",
    ),
    1301: _text(
        "bebe|maison",
        "body|chaussettes|pyjama|grenouillère|bavoir|bonnet|balles de babyfoot|chaussons",
        "{i} mois|{n2} mois|brodé|imprimé|manches longues|tricot",
        "Petit Bateau|Bonzini|Absorba|Catimini",
        "lot de {i}|taille {i} ans|{n} mm",
        "en pur coton doux|lavable en machine|taille {i} mois",
    ),
    1560: _text(
        "maison",
        "fauteuil|table basse|chaise|matelas|étagère|commode|canapé|bureau|armoire|tabouret",
        "scandinave|cuir|bois massif|mémoire de forme|velours|métal|industriel",
        "Eames|Chesterfield|Vente-unique|Ikea",
        "{w}x{h} cm|{w} x {h} x {n} cm|{i} places",
        "montage facile|pieds en bois massif|assise confortable",
    ),
    1920: _text(
        "maison|bebe",
        "coussin|housse de couette|drap|taie d'oreiller|plaid|rideau|nappe|serviette|"
        "housse de canapé",
        "lin|polyester|brodé|doux|microfibre|imprimé|polaire",
        "Blanc des Vosges|Linvosges|Home Decor",
        "{w}x{h} cm|{w} x {h} cm|lot de {i}",
        "lavable en machine à {n2} degrés|toucher doux|finitions soignées",
    ),
    2060: _text(
        "maison",
        "guirlande|bougie|cadre photo|miroir|vase|sticker mural|spot led|horloge|"
        "décoration de noël|lampe",
        "décoratif|lumineux|led|doré|mural|encastrable",
        "Atmosphera|Maisons du Monde|Gu10",
        "{n} cm|{i} w|lot de {i}|{n} led",
        "apporte une touche chaleureuse|idéal pour votre salon|décoration de fête",
    ),
    1940: _text(
        "maison pratique",
        "café|capsules|thé|chocolat|bonbons|biscuits|confiture|épices|huile d'olive|chewing gum",
        "bio|sans gluten|gourmand|équitable|artisanal|sucré",
        "Tassimo|Dolce Gusto|Nespresso|Lindt|Haribo|Lu",
        "{n} g|{n} ml|lot de {i}|{i} x {n2} g",
        "à consommer de préférence avant|saveur intense|recette traditionnelle",
    ),
    2220: _text(
        "maison pratique|maison",
        "collier|croquettes|litière|griffoir|niche|laisse|arbre à chat|gamelle|jouet pour chien|"
        "aquarium",
        "chien|chat|oiseau|réglable|réfléchissant|anti-traction",
        "Royal Canin|Trixie|Purina|Ferplast",
        "{i} kg|{n} cm|taille {i}",
        "pour chiens et chats|confortable pour votre animal|nourriture complète",
    ),
    2522: _text(
        "bureau",
        "cahier|stylo|agrafeuse|classeur|crayons de couleur|carnet|trousse|agenda|feutres|"
        "calculatrice",
        "a4|a5|spirale|ligné|quadrillé|effaçable|pointe fine",
        "Faber-Castell|Clairefontaine|Bic|Oxford|Stabilo|Pilot",
        "lot de {i}|{n} feuilles|{n} pages|{i} couleurs",
        "idéal pour la rentrée scolaire|papier de qualité|pour le bureau et l'école",
    ),
    2582: _text(
        "jardin|maison",
        "salon de jardin|parasol|tonnelle|tente pliante|transat|hamac|lampe solaire|barnum|"
        "bain de soleil",
        "résine tressée|aluminium|étanche|pliant|anti-uv|solaire",
        "Hesperide|Keter|Proloisirs",
        "{w} x {h} m|{i} places|{n} led",
        "résiste aux intempéries|pour profiter de votre terrasse|structure robuste",
    ),
    2583: _text(
        "jardin",
        "piscine|bâche|pompe|filtre|robot de piscine|skimmer|chlore|liner|échelle|spa gonflable",
        "hors-sol|tubulaire|gonflable|autoportante|rectangulaire|à sable",
        "Intex|Bestway|Zodiac|Gre|Marina",
        "{n} m3|{w} x {h} cm|{n} l|{d} m",
        "pour une eau limpide|filtration efficace|entretien de votre piscine",
    ),
    2585: _text(
        "jardin",
        "taille-haies|tondeuse|tuyau d'arrosage|arrosoir|sécateur|pot de fleur|perceuse|"
        "débroussailleuse|souffleur",
        "sans fil|électrique|thermique|lithium|professionnel|robuste",
        "Bosch|Gardena|Makita|Ryobi|Black+Decker|Fiskars",
        "{n} w|{i} v|{n} mm|{n} m",
        "batterie non incluse|coupe nette et précise|pour l'entretien du jardin",
    ),
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


# --------------------------------------------------------------------------------------------
# Text
# --------------------------------------------------------------------------------------------


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


def _make_texts(seed: int, split: int, codes: np.ndarray) -> tuple[list[str], list[str]]:
    """Titles and descriptions of one split.

    Text is drawn serially with the standard library generator: scalar draws are several times
    cheaper than numpy's, and a row needs dozens of them.
    """
    state = np.random.SeedSequence([seed, split, _STREAM_TEXT]).generate_state(1)
    rnd = random.Random(int(state[0]))
    titles, descriptions = [], []
    for code in codes.tolist():
        title, description = _make_row_text(rnd, code)
        titles.append(title)
        descriptions.append(description)
    return titles, descriptions


# --------------------------------------------------------------------------------------------
# Labels, ids and defects
# --------------------------------------------------------------------------------------------


def allocate_counts(rows: int) -> dict[int, int]:
    """Rows per class by largest remainder, at least one per class when ``rows >= 27``.

    Args:
        rows: total number of rows.

    Returns:
        Class code -> row count, summing to ``rows``.
    """
    codes = np.asarray(CLASS_CODES)
    shares = np.array([CLASS_SHARES[c] for c in CLASS_CODES])
    quota = shares / shares.sum() * rows
    counts = np.floor(quota).astype(np.int64)
    # Stable sort: ties in the remainder go to the lower code, so the result is reproducible.
    by_remainder = np.argsort(-(quota - counts), kind="stable")
    counts[by_remainder[: rows - counts.sum()]] += 1
    if rows >= len(codes):
        # Small catalogues: lend one row from the largest class to each empty class.
        for empty in np.flatnonzero(counts == 0):
            counts[np.argmax(counts)] -= 1
            counts[empty] += 1
    return dict(zip(codes.tolist(), counts.tolist(), strict=True))


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(keys)))


def _make_labels(seed: int, split: int, rows: int) -> np.ndarray:
    counts = allocate_counts(rows)
    labels = np.repeat(np.array(list(counts)), list(counts.values()))
    return _rng(seed, split, _STREAM_LABELS).permutation(labels)


def _make_ids(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique product and image ids for all rows of both splits."""
    rng = _rng(seed, _STREAM_IDS)
    return _unique_ints(rng, _PRODUCTID_RANGE, rows), _unique_ints(rng, _IMAGEID_RANGE, rows)


def _unique_ints(rng: np.random.Generator, bounds: tuple[int, int], count: int) -> np.ndarray:
    """``count`` distinct integers in ``[low, high)``, in random order."""
    low, high = bounds
    return low + rng.choice(high - low, size=count, replace=False).astype(np.int64)


class _Defect(IntEnum):
    """State of a row's image file."""

    NONE = 0
    MISSING = 1
    EMPTY = 2
    TRUNCATED = 3
    NOT_JPEG = 4


_UNREADABLE_KINDS = (_Defect.EMPTY, _Defect.TRUNCATED, _Defect.NOT_JPEG)


def _defect_counts(rows: int) -> tuple[int, int]:
    """Missing and unreadable image counts for a split of ``rows`` rows."""
    missing = round(rows * MISSING_IMAGE_RATE)
    unreadable = min(math.ceil(rows * UNREADABLE_IMAGE_RATE), rows - missing)
    return missing, unreadable


def _make_defects(seed: int, split: int, rows: int, first_kind: int) -> np.ndarray:
    """Per-row defect; unreadable kinds rotate, continuing from ``first_kind`` across splits."""
    missing, unreadable = _defect_counts(rows)
    defects = np.full(rows, _Defect.NONE, dtype=np.int64)
    chosen = _rng(seed, split, _STREAM_DEFECTS).choice(rows, missing + unreadable, replace=False)
    defects[chosen[:missing]] = _Defect.MISSING
    kinds = [
        _UNREADABLE_KINDS[(first_kind + k) % len(_UNREADABLE_KINDS)] for k in range(unreadable)
    ]
    defects[chosen[missing:]] = kinds
    return defects


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------


class _Recipe(NamedTuple):
    """How a class looks: a shape family, a base hue (degrees) and a tone."""

    shape: str
    hue: float
    tone: str


#: Saturation and value ranges of each tone.
_TONES: dict[str, tuple[tuple[float, float], tuple[float, float]]] = {
    "vivid": ((0.65, 1.0), (0.7, 1.0)),
    "dark": ((0.45, 0.9), (0.25, 0.55)),
    "pastel": ((0.2, 0.45), (0.85, 1.0)),
}

# Neighbouring classes share either the shape family or the hue, so images alone confuse them.
_RECIPES: dict[int, _Recipe] = {
    10: _Recipe("rects", 30, "dark"), 2705: _Recipe("rects", 210, "vivid"),
    2403: _Recipe("grid", 30, "dark"), 2280: _Recipe("stripes", 210, "vivid"),
    2522: _Recipe("grid", 90, "vivid"), 40: _Recipe("rects", 270, "dark"),
    2462: _Recipe("grid", 270, "dark"), 2905: _Recipe("stripes", 270, "vivid"),
    50: _Recipe("circles", 0, "dark"), 60: _Recipe("rings", 0, "dark"),
    1280: _Recipe("circles", 60, "vivid"), 1281: _Recipe("diamonds", 60, "vivid"),
    1140: _Recipe("stars", 300, "vivid"), 1180: _Recipe("stars", 120, "dark"),
    1160: _Recipe("diamonds", 300, "vivid"), 1300: _Recipe("crosses", 180, "dark"),
    1302: _Recipe("circles", 150, "vivid"), 1320: _Recipe("blobs", 330, "pastel"),
    1301: _Recipe("rings", 330, "pastel"), 1560: _Recipe("crosses", 30, "dark"),
    1920: _Recipe("stripes", 330, "pastel"), 2060: _Recipe("triangles", 45, "vivid"),
    2582: _Recipe("triangles", 120, "vivid"), 2583: _Recipe("blobs", 195, "vivid"),
    2585: _Recipe("crosses", 120, "dark"), 1940: _Recipe("blobs", 15, "vivid"),
    2220: _Recipe("triangles", 15, "dark"),
}  # fmt: skip

#: A part of a shape: vertices in unit space (about [-1, 1]) and whether it is drawn as outline.
_Part = tuple[np.ndarray, bool]


def _polygon(angles: np.ndarray, radii: np.ndarray | float) -> np.ndarray:
    return np.stack([np.cos(angles) * radii, np.sin(angles) * radii], axis=1)


def _box(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])


_CIRCLE = np.linspace(0, 2 * np.pi, 32, endpoint=False)


def _rects(rng: np.random.Generator) -> list[_Part]:
    width = rng.uniform(0.5, 0.8)
    return [(_box(-width, -1, width, 1), False)]


def _stripes(rng: np.random.Generator) -> list[_Part]:
    count = int(rng.integers(3, 7))
    edges = np.linspace(-1, 1, 2 * count + 1)
    return [(_box(edges[2 * k], -1, edges[2 * k + 1], 1), False) for k in range(count)]


def _grid(rng: np.random.Generator) -> list[_Part]:
    count = int(rng.integers(2, 5))
    edges = np.linspace(-1, 1, count + 1)
    gap = 0.15 * (edges[1] - edges[0])
    return [
        (_box(edges[i] + gap, edges[j] + gap, edges[i + 1] - gap, edges[j + 1] - gap), False)
        for i in range(count)
        for j in range(count)
    ]


def _circles(rng: np.random.Generator) -> list[_Part]:
    return [(_polygon(_CIRCLE, 1.0), False)]


def _rings(rng: np.random.Generator) -> list[_Part]:
    return [(_polygon(_CIRCLE, 1.0), True)]


def _blobs(rng: np.random.Generator) -> list[_Part]:
    phase = rng.uniform(0, 2 * np.pi, 2)
    radii = 1 + 0.2 * np.sin(3 * _CIRCLE + phase[0]) + 0.15 * np.sin(5 * _CIRCLE + phase[1])
    return [(_polygon(_CIRCLE, radii / 1.35), False)]


def _triangles(rng: np.random.Generator) -> list[_Part]:
    return [(_polygon(np.array([-np.pi / 2, np.pi / 6, 5 * np.pi / 6]), 1.0), False)]


def _diamonds(rng: np.random.Generator) -> list[_Part]:
    return [(np.array([[0, -1], [0.6, 0], [0, 1], [-0.6, 0]]), False)]


def _crosses(rng: np.random.Generator) -> list[_Part]:
    arm = rng.uniform(0.25, 0.4)
    return [(_box(-arm, -1, arm, 1), False), (_box(-1, -arm, 1, arm), False)]


def _stars(rng: np.random.Generator) -> list[_Part]:
    angles = np.linspace(-np.pi / 2, 3 * np.pi / 2, 10, endpoint=False)
    return [(_polygon(angles, np.tile([1.0, rng.uniform(0.35, 0.55)], 5)), False)]


_SHAPES: dict[str, Callable[[np.random.Generator], list[_Part]]] = {
    "rects": _rects, "stripes": _stripes, "grid": _grid, "circles": _circles,
    "rings": _rings, "blobs": _blobs, "triangles": _triangles, "diamonds": _diamonds,
    "crosses": _crosses, "stars": _stars,
}  # fmt: skip


def _colour(rng: np.random.Generator, hue: float, tone: str) -> tuple[int, int, int]:
    """A colour near ``hue``; the jitter makes neighbouring hues overlap."""
    (s_lo, s_hi), (v_lo, v_hi) = _TONES[tone]
    h = ((hue + rng.normal(0, 15)) % 360) / 360
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(s_lo, s_hi), rng.uniform(v_lo, v_hi))
    return round(255 * r), round(255 * g), round(255 * b)


def _background(rng: np.random.Generator) -> Image.Image:
    """A textured background: blotchy colour at low resolution plus grain, upscaled.

    Working at a quarter of the final size keeps it cheap; the upscale softens the grain into
    a texture, like a table or fabric behind a product.
    """
    if rng.random() < 0.35:
        base, blotch = rng.uniform(225, 250, 3), 6.0  # the white studio backdrop of shop photos
    else:
        base, blotch = rng.uniform(60, 230, 3), 30.0
    low = np.clip(base + rng.normal(0, blotch, (6, 6, 3)), 0, 255).astype(np.uint8)
    quarter = IMAGE_SIZE // 4
    field = np.asarray(
        Image.fromarray(low).resize((quarter, quarter), Image.BILINEAR), dtype=np.float32
    )
    field += rng.normal(0, rng.uniform(3, 18), (quarter, quarter, 1)).astype(np.float32)
    field = np.clip(field, 0, 255).astype(np.uint8)
    return Image.fromarray(field).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)


def _draw_shape(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, recipe: _Recipe, scale: tuple[float, float]
) -> None:
    """Draw one shape of ``recipe`` at a random place, size and rotation."""
    size = rng.uniform(*scale)
    angle = rng.uniform(0, 2 * np.pi)
    rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    centre = rng.uniform(0.1 * IMAGE_SIZE, 0.9 * IMAGE_SIZE, 2)
    colour = _colour(rng, recipe.hue, recipe.tone)
    for vertices, outline in _SHAPES[recipe.shape](rng):
        points = (vertices @ rotation * size + centre).ravel().tolist()
        if outline:
            draw.line(
                points + points[:2], fill=colour, width=max(4, int(size * 0.3)), joint="curve"
            )
        else:
            draw.polygon(points, fill=colour)


def render_image(code: int, rng: np.random.Generator) -> Image.Image:
    """Draw a 500x500 RGB picture whose content hints at class ``code``.

    Args:
        code: product type code whose recipe is (usually) used.
        rng: random stream of this image.

    Returns:
        The picture.
    """
    recipe = _RECIPES[code]
    if rng.random() < AMBIGUOUS_IMAGE_RATE:
        recipe = _RECIPES[CLASS_CODES[int(rng.integers(len(CLASS_CODES)))]]
    image = _background(rng)
    draw = ImageDraw.Draw(image)
    # Distractors first, so that the class's own shapes usually sit on top.
    for _ in range(int(rng.integers(0, 3))):
        other = _RECIPES[CLASS_CODES[int(rng.integers(len(CLASS_CODES)))]]
        _draw_shape(draw, rng, other, (20, 70))
    for _ in range(int(rng.integers(1, 4))):
        _draw_shape(draw, rng, recipe, (50, 160))
    return image


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


class _ImageJob(NamedTuple):
    """Everything a worker needs to write one image file, and nothing that depends on order."""

    path: str
    code: int
    seed: int
    split: int
    row: int
    defect: int


def _write_image(job: _ImageJob) -> None:
    path = Path(job.path)
    defect = _Defect(job.defect)
    if defect is _Defect.MISSING:
        path.unlink(missing_ok=True)  # a file left by an earlier run would hide the defect
        return
    if defect is _Defect.EMPTY:
        path.write_bytes(b"")
        return
    if defect is _Defect.NOT_JPEG:
        path.write_text("<html><body>404 Not Found</body></html>\n", encoding="utf-8")
        return
    data = _jpeg_bytes(render_image(job.code, _rng(job.seed, job.split, job.row, _STREAM_IMAGE)))
    # A transfer cut short: the header parses, the scan data ends early.
    path.write_bytes(data[: int(len(data) * 0.4)] if defect is _Defect.TRUNCATED else data)


def _write_images(jobs: list[_ImageJob], workers: int) -> None:
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            _write_image(job)
        return
    chunk = max(1, len(jobs) // (workers * 8))
    # Spawned workers, not forked ones: forking a caller that already runs threads (a Ray
    # driver, a web server) can deadlock, and spawn behaves the same on every platform.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        # Drain the results so that an exception in a worker is raised here.
        for _ in pool.map(_write_image, jobs, chunksize=chunk):
            pass


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=True, encoding="utf-8", lineterminator="\n")


def _validate(rows: int, test_rows: int, seed: int, workers: int | None) -> int:
    """Check the arguments and return the worker count to use."""
    if rows < len(CLASS_CODES):
        raise ValueError(f"rows must be >= {len(CLASS_CODES)} (one per class), got {rows}")
    if test_rows < 0:
        raise ValueError(f"test_rows must be >= 0, got {test_rows}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers if workers is not None else os.cpu_count() or 1


def _write_split_csvs(
    root: Path,
    split: str,
    index: pd.RangeIndex,
    codes: np.ndarray,
    texts: tuple[list[str], list[str]],
    productids: np.ndarray,
    imageids: np.ndarray,
) -> list[Path]:
    """Write the X and Y files of one split; return their paths."""
    x_path, y_path = (
        (root / X_TRAIN_FILE, root / Y_TRAIN_FILE)
        if split == "train"
        else (root / X_TEST_FILE, root / Y_TEST_FILE)
    )
    columns = (*texts, productids, imageids)
    _write_csv(pd.DataFrame(dict(zip(X_COLUMNS, columns, strict=True)), index=index), x_path)
    _write_csv(pd.DataFrame({LABEL_COLUMN: codes}, index=index), y_path)
    return [x_path, y_path]


def _image_jobs(
    image_dir: Path,
    seed: int,
    split: int,
    codes: np.ndarray,
    productids: np.ndarray,
    imageids: np.ndarray,
    defects: np.ndarray,
) -> list[_ImageJob]:
    rows = zip(
        codes.tolist(), productids.tolist(), imageids.tolist(), defects.tolist(), strict=True
    )
    return [
        _ImageJob(str(image_dir / image_filename(iid, pid)), code, seed, split, row, defect)
        for row, (code, pid, iid, defect) in enumerate(rows)
    ]


def generate_catalogue(
    out_dir: str | Path,
    rows: int = 6000,
    test_rows: int = 1000,
    seed: int = 0,
    workers: int | None = None,
    images: bool = True,
) -> CatalogueSummary:
    """Write a synthetic catalogue in the challenge's raw layout.

    Writes ``X_train_update.csv``, ``Y_train_CVw08PX.csv``, ``X_test_update.csv`` (index
    continuing after the training rows), ``Y_test_labels.csv`` and, unless ``images`` is false,
    the JPEGs under ``images/image_train`` and ``images/image_test``. About 2% of rows have no
    image file and about 0.3% an unreadable one (empty, truncated, or text).

    Args:
        out_dir: destination folder, created if needed; existing files are overwritten.
        rows: training rows (at least 27, so every class appears).
        test_rows: test rows (0 for none; the test files are then written with headers only).
        seed: non-negative seed; the same arguments give byte-identical files.
        workers: processes drawing images; default ``os.cpu_count()``. Does not change output.
        images: also write the image files.

    Returns:
        What was written.

    Raises:
        ValueError: an argument is out of range.
    """
    started = time.perf_counter()
    workers = _validate(rows, test_rows, seed, workers)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    productids, imageids = _make_ids(seed, rows + test_rows)
    csv_files: list[Path] = []
    image_dirs: list[Path] = []
    jobs: list[_ImageJob] = []
    for split_index, (split, offset, n) in enumerate(
        (("train", 0, rows), ("test", rows, test_rows))
    ):
        ids = slice(offset, offset + n)
        codes = _make_labels(seed, split_index, n)
        texts = _make_texts(seed, split_index, codes)
        csv_files += _write_split_csvs(
            root,
            split,
            pd.RangeIndex(offset, offset + n),
            codes,
            texts,
            productids[ids],
            imageids[ids],
        )
        if images:
            image_dir = root / IMAGE_SUBDIRS[split]
            image_dir.mkdir(parents=True, exist_ok=True)
            image_dirs.append(image_dir)
            unreadable_so_far = sum(job.defect in _UNREADABLE_KINDS for job in jobs)
            defects = _make_defects(seed, split_index, n, unreadable_so_far)
            jobs += _image_jobs(
                image_dir, seed, split_index, codes, productids[ids], imageids[ids], defects
            )
    _write_images(jobs, workers)
    return CatalogueSummary(
        root=root,
        csv_files=tuple(csv_files),
        image_dirs=tuple(image_dirs),
        train_rows=rows,
        test_rows=test_rows,
        missing_images=sum(job.defect == _Defect.MISSING for job in jobs),
        unreadable_images=sum(job.defect in _UNREADABLE_KINDS for job in jobs),
        elapsed_s=time.perf_counter() - started,
    )
