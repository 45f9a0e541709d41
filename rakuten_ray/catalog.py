"""The challenge's raw layout: files, columns, the 27 product type codes and image paths.

Everything that reads catalogue files goes through this module, so schema problems are
caught once, at the boundary, before any work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: The 27 product type codes in ascending order: the class order used everywhere.
CLASS_CODES: tuple[int, ...] = (
    10, 40, 50, 60, 1140, 1160, 1180, 1280, 1281, 1300, 1301, 1302, 1320, 1560, 1920,
    1940, 2060, 2220, 2280, 2403, 2462, 2522, 2582, 2583, 2585, 2705, 2905,
)  # fmt: skip
NUM_CLASSES = len(CLASS_CODES)
CODE_TO_INDEX: dict[int, int] = {code: i for i, code in enumerate(CLASS_CODES)}

#: French category names, for reports.
CATEGORY_NAMES: dict[int, str] = {
    10: "Livres anciens / occasion",
    40: "Jeux vidéo, CD, accessoires",
    50: "Accessoires de jeux vidéo",
    60: "Consoles de jeux",
    1140: "Figurines et produits dérivés",
    1160: "Cartes à collectionner",
    1180: "Figurines et jeux de rôle",
    1280: "Jouets pour enfants",
    1281: "Jeux de société",
    1300: "Modélisme et drones",
    1301: "Vêtements bébé et chaussettes",
    1302: "Jeux d'extérieur",
    1320: "Puériculture",
    1560: "Mobilier et décoration",
    1920: "Linge de maison",
    1940: "Épicerie",
    2060: "Décoration",
    2220: "Animalerie",
    2280: "Magazines et revues",
    2403: "Livres, BD et magazines en lot",
    2462: "Jeux vidéo d'occasion",
    2522: "Papeterie",
    2582: "Mobilier de jardin",
    2583: "Piscine et accessoires",
    2585: "Bricolage et outillage de jardin",
    2705: "Livres neufs",
    2905: "Jeux PC en téléchargement",
}

X_COLUMNS: tuple[str, ...] = ("designation", "description", "productid", "imageid")
ID_COLUMNS: tuple[str, ...] = ("productid", "imageid")
#: Optional columns of a Parquet input that carry each row's image in place of the image
#: folder: its encoded bytes, or the path or URI of its file.
IMAGE_BYTES_COLUMN, IMAGE_URI_COLUMN = "image", "image_uri"
IMAGE_COLUMNS: tuple[str, ...] = (IMAGE_BYTES_COLUMN, IMAGE_URI_COLUMN)
LABEL_COLUMN = "prdtypecode"

X_TRAIN_FILE = "X_train_update.csv"
Y_TRAIN_FILE = "Y_train_CVw08PX.csv"
X_TEST_FILE = "X_test_update.csv"
IMAGE_SUBDIRS = {"train": "images/image_train", "test": "images/image_test"}

#: How many offending rows an error message quotes.
MAX_QUOTED_ROWS = 5

#: An id or a label as a catalogue file writes it: see :func:`_integer_text`.
_ID_PATTERN = r"\d{1,18}(?:\.0*)?"
#: A row index: the same, with an optional minus sign.
_INDEX_PATTERN = r"-?\d{1,18}(?:\.0*)?"


class SchemaError(ValueError):
    """A catalogue file does not have the challenge's layout.

    Raised before any work starts; the command line turns it into exit status 2.
    """


def _offending(path: Path, column: str, mask: pd.Series, values: pd.Series, problem: str) -> str:
    rows = values[mask]
    quoted = ", ".join(f"row {idx!r}: {val!r}" for idx, val in rows.head(MAX_QUOTED_ROWS).items())
    more = f" (and {len(rows) - MAX_QUOTED_ROWS} more)" if len(rows) > MAX_QUOTED_ROWS else ""
    return f"{path}: column {column!r} {problem} in {len(rows)} row(s): {quoted}{more}"


def _integer_text(values: pd.Series, pattern: str) -> tuple[pd.Series, pd.Series]:
    """Cells stripped of spaces, and where they are not integers written as ``pattern`` says.

    Digits only (an optional ".0" tail, as spreadsheets write integers), at most 18 of them so
    the value fits int64: no float round trip that could corrupt a large id or let "inf" or
    "1e30" through.
    """
    raw = values.astype(str).str.strip()
    bad = ~raw.str.fullmatch(pattern).fillna(False).astype(bool)
    return raw, bad


def _to_int64(raw: pd.Series) -> pd.Series:
    return raw.str.split(".", n=1).str[0].astype(np.int64)


def parse_index(source: str | Path, index: pd.Series) -> np.ndarray:
    """A table's row index as int64, checked: integers only, no value twice.

    Raises:
        SchemaError: naming ``source`` and the offending rows.
    """
    path = Path(str(source))
    raw, bad = _integer_text(index, _INDEX_PATTERN)
    if bad.any():
        raise SchemaError(_offending(path, "index", bad, index, "is not an integer"))
    values = _to_int64(raw).to_numpy()
    duplicated = pd.Series(pd.Index(values).duplicated(keep=False), index=index.index)
    if duplicated.any():
        shown = pd.Series(values, index=index.index)
        raise SchemaError(_offending(path, "index", duplicated, shown, "has duplicate values"))
    return values


def _read_indexed_csv(path: Path) -> pd.DataFrame:
    """Read a CSV whose first, unnamed column is the row index, keeping every cell as text."""
    path = Path(path)
    if not path.is_file():
        raise SchemaError(f"{path}: file not found")
    try:
        frame = pd.read_csv(
            path,
            index_col=0,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8",
            encoding_errors="replace",
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as exc:
        raise SchemaError(f"{path}: not a readable CSV file ({exc})") from exc
    frame.index = parse_index(path, pd.Series(frame.index, index=frame.index))
    frame.index.name = None
    return frame


def _require_columns(path: Path, frame: pd.DataFrame, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"{path}: missing column(s) {missing}; expected {list(columns)}, "
            f"found {list(frame.columns)}"
        )


def _parse_int_column(path: Path, frame: pd.DataFrame, column: str) -> pd.Series:
    raw, bad = _integer_text(frame[column], _ID_PATTERN)
    if bad.any():
        problem = "is not a non-negative integer"
        raise SchemaError(_offending(path, column, bad, frame[column], problem))
    return _to_int64(raw)


def validate_products(frame: pd.DataFrame, source: str | Path = "<input>") -> pd.DataFrame:
    """Check and normalise a product table that has the X columns.

    Args:
        frame: table with at least ``designation``, ``description``, ``productid``, ``imageid``;
            its index is the row id carried to the output.
        source: name used in error messages.

    Returns:
        A new frame with exactly the X columns: text as ``str`` (missing -> ``""``) and ids as
        ``int64``.

    Raises:
        SchemaError: a column is missing or an id is not a non-negative integer.
    """
    path = Path(str(source))
    _require_columns(path, frame, X_COLUMNS)
    as_text = frame[list(X_COLUMNS)].astype(object).where(frame[list(X_COLUMNS)].notna(), "")
    as_text = as_text.map(str)
    out = pd.DataFrame(index=frame.index)
    out["designation"] = as_text["designation"]
    out["description"] = as_text["description"]
    for column in ID_COLUMNS:
        out[column] = _parse_int_column(path, as_text, column)
    return out


def read_products(path: str | Path) -> pd.DataFrame:
    """Read an X file (``X_train_update.csv`` or ``X_test_update.csv``) with schema checks."""
    path = Path(path)
    return validate_products(_read_indexed_csv(path), path)


def read_labels(path: str | Path) -> pd.Series:
    """Read a Y file; every label must be one of the 27 codes.

    Returns:
        ``int64`` series named ``prdtypecode`` indexed by the file's row index.
    """
    path = Path(path)
    return validate_labels(_read_indexed_csv(path), path)


def validate_labels(frame: pd.DataFrame, source: str | Path = "<input>") -> pd.Series:
    """Check a table's ``prdtypecode`` column: every label one of the 27 codes.

    Returns:
        ``int64`` series named ``prdtypecode`` with the table's index.

    Raises:
        SchemaError: the column is missing, or a label is not one of the codes.
    """
    path = Path(str(source))
    _require_columns(path, frame, (LABEL_COLUMN,))
    codes = _parse_int_column(path, frame, LABEL_COLUMN)
    unknown = ~codes.isin(CLASS_CODES)
    if unknown.any():
        raise SchemaError(
            _offending(
                path,
                LABEL_COLUMN,
                unknown,
                frame[LABEL_COLUMN],
                "holds a code outside the 27 product type codes",
            )
        )
    return codes.rename(LABEL_COLUMN)


def join_labels(products: pd.DataFrame, labels: pd.Series, source: str | Path) -> pd.DataFrame:
    """Attach labels to products by row index (never by position).

    Raises:
        SchemaError: a product row has no label.
    """
    missing = ~products.index.isin(labels.index)
    if missing.any():
        ids = pd.Series(products.index, index=products.index)
        raise SchemaError(
            _offending(
                Path(str(source)),
                "index",
                pd.Series(missing, index=products.index),
                ids,
                "has no label",
            )
        )
    out = products.copy()
    out[LABEL_COLUMN] = labels.reindex(products.index).astype(np.int64)
    return out


@dataclass(frozen=True)
class CatalogueDir:
    """A folder in the challenge's raw layout."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def x_train(self) -> Path:
        return self.root / X_TRAIN_FILE

    @property
    def y_train(self) -> Path:
        return self.root / Y_TRAIN_FILE

    @property
    def x_test(self) -> Path:
        return self.root / X_TEST_FILE

    def image_dir(self, split: str) -> Path:
        """Folder of the images of ``split`` (``train`` or ``test``)."""
        return self.root / IMAGE_SUBDIRS[split]

    def labelled(self) -> pd.DataFrame:
        """Training products with their ``prdtypecode``, joined by index."""
        return join_labels(read_products(self.x_train), read_labels(self.y_train), self.y_train)


def image_filename(imageid: int, productid: int) -> str:
    """File name of a product image, built from integers only (no path can be smuggled in)."""
    return f"image_{int(imageid)}_product_{int(productid)}.jpg"


def image_path(image_dir: str | Path, imageid: int, productid: int) -> Path:
    """Path of a product image inside ``image_dir``."""
    return Path(image_dir) / image_filename(imageid, productid)


def codes_to_indices(codes: np.ndarray | pd.Series) -> np.ndarray:
    """Map product type codes to class indices (0..26) in :data:`CLASS_CODES` order."""
    return np.searchsorted(np.asarray(CLASS_CODES), np.asarray(codes, dtype=np.int64))


def indices_to_codes(indices: np.ndarray) -> np.ndarray:
    """Map class indices back to product type codes."""
    return np.asarray(CLASS_CODES, dtype=np.int64)[np.asarray(indices, dtype=np.int64)]
