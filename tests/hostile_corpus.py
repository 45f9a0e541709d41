"""A hostile scoring input: one CSV whose rows each hold one kind of bad data, and its images.

Every case names the ``image_status`` its row must get. The CSV is written byte by byte, so
cells can hold bytes that are not UTF-8, and rows can be shorter or longer than the header.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from rakuten_ray.catalog import X_COLUMNS, image_path

#: A cell: text (written as UTF-8), raw bytes, or ``None`` for a field the row does not have.
Cell = str | bytes | None
#: Writes one file (or link, or folder) at the image path of a row.
ImageWriter = Callable[[Path, Path], None]

TITLE = "Lampe de chevet en lin"
DESCRIPTION = "Abat-jour en lin naturel, pied en chêne massif, ampoule E27 fournie."
#: Side of the synthetic photos: small, so the corpus writes and scores fast.
SIDE = 48
#: A megabyte of description: the cleaning caps it long before the models see it.
MEGABYTE = 1_000_000


def png_header_only(width: int, height: int) -> bytes:
    """A 1-bit gray PNG whose header claims ``width x height`` but holds no pixel data."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(tag + data))
        return struct.pack(">I", len(data)) + tag + data + crc

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


# --- image writers: (path, folder outside the image folder) -> None ---------------------------


def _photo(mode: str = "RGB", side: int = SIDE) -> Image.Image:
    """A photo-like gradient (seeded noise on top), converted to ``mode``."""
    x, y = np.meshgrid(*[np.linspace(0, 255, side)] * 2)
    rgb = np.stack([(x + y) / 2, x, y], axis=-1)
    noisy = np.clip(rgb + np.random.default_rng(side).normal(0, 20, rgb.shape), 0, 255)
    return Image.fromarray(noisy.astype(np.uint8)).convert(mode)


def saved(fmt: str, mode: str = "RGB", side: int = SIDE, **options: object) -> ImageWriter:
    """An image of ``mode`` saved in ``fmt`` whatever the file's ``.jpg`` name says."""

    def write(path: Path, _: Path) -> None:
        _photo(mode, side).save(path, format=fmt, **options)

    return write


def sixteen_bit_png(path: Path, _: Path) -> None:
    ramp = np.linspace(0, 65535, SIDE * SIDE).reshape(SIDE, SIDE).astype(np.uint16)
    Image.fromarray(ramp).save(path, format="PNG")
    with Image.open(path) as image:
        assert image.mode.startswith("I"), image.mode


def palette_png_with_transparency(path: Path, _: Path) -> None:
    image = _photo("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    image.save(path, format="PNG", transparency=0)


def animated_gif(path: Path, _: Path) -> None:
    frames = [_photo("RGB").rotate(angle) for angle in (0, 90, 180)]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=40)


def raw_bytes(data: bytes) -> ImageWriter:
    def write(path: Path, _: Path) -> None:
        path.write_bytes(data)

    return write


def truncated_jpeg(path: Path, _: Path) -> None:
    saved("JPEG", quality=95)(path, _)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def link_outside(name: str, writer: ImageWriter | None) -> ImageWriter:
    """A symbolic link to ``outside/name``, written by ``writer`` (``None``: left dangling)."""

    def write(path: Path, outside: Path) -> None:
        target = outside / name
        if writer is not None:
            writer(target, outside)
        path.symlink_to(target)

    return write


def folder(path: Path, _: Path) -> None:
    path.mkdir()


jpeg = saved("JPEG")


# --- the cases --------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowCase:
    """One input row: its cells, the file at its image path, and the status it must get.

    ``productid`` and ``imageid`` default to ids unique to the case; ``index`` to its position.
    What each case shows is written up in docs/reliability.md.
    """

    name: str
    status: str
    designation: Cell = TITLE
    description: Cell = DESCRIPTION
    image: ImageWriter | None = jpeg
    productid: Cell = None
    imageid: Cell = None
    index: Cell = None
    surplus: tuple[Cell, ...] = ()
    #: The row ends after this many fields (``None``: all five).
    fields: int | None = None


def _text(name: str, designation: Cell = TITLE, description: Cell = DESCRIPTION) -> RowCase:
    """A row with odd text and a valid image."""
    return RowCase(name, "ok", designation, description)


def _image(name: str, status: str, image: ImageWriter | None) -> RowCase:
    """A row with plain text and an odd image file."""
    return RowCase(name, status, image=image)


def _ids(name: str, **ids: Cell) -> RowCase:
    """A row whose ids are not valid: scored from text alone."""
    return RowCase(name, "invalid_id", image=None, **ids)


_HTML = "<div class='x'><ul><li>lin</li></ul></div> <img src=x onerror=alert(1)>"
_SCRIPT = "<script>alert('<b>x</b>')</script>Lampe<style>p{color:red}</style><script>unclosed"

CASES: tuple[RowCase, ...] = (
    _text("plain row"),
    _text("empty designation", designation=""),
    _text("empty description", description=""),
    _text("empty designation and description", "", ""),
    _text("NaN designation", "NaN", "nan"),
    _text("null-like words", "NA null", "None"),
    RowCase("row ends after designation", "invalid_id", image=None, fields=2),
    RowCase("surplus fields", "ok", surplus=("extra", "1234")),
    _text("1 MB description", description="Abat-jour en lin naturel. " * (MEGABYTE // 26)),
    _text("60k-character word", "A" * 60_000),
    _text("HTML markup", "<p>Lampe <b>de chevet</b></p><br/>", _HTML),
    _text("script and style", description=_SCRIPT),
    _text("HTML entities", "Caf&eacute; &amp;eacute; &#x1F4A1; &#0; &#xD800; &bogus;"),
    _text("emoji", "💡 Lampe 👍🏽 famille 👨‍👩‍👧 🇫🇷"),
    _text("right-to-left text", "\u202eLampe\u202c مصباح سرير", "מנורת לילה \u200f"),
    _text("control characters", "\x00Lam\x07pe\x1b[31m\x7f\x85\x9f", "a\x0bb\x0cc"),
    _text("bytes that are not UTF-8", b"Lampe \xe9t\xe9 \xff\xfe", b"\xed\xa0\x80 \xc3\x28 \x80"),
    _text("quotes and line breaks in cells", 'Lampe "design"\nligne 2\r\nligne 3\rfin', '"",,;\t'),
    _text("braces and format specifiers", "{designation} {0} %s {{x}}", "{description}"),
    _text("combining marks and invisible characters", "Lampe e\u0301te\u0301 \u200b\ufeff\u00ad"),
    _text("formula-looking cells", '=HYPERLINK("x")', "+cmd|' /C calc'!A0"),
    _image("missing image", "missing", None),
    _image("zero-byte file", "unreadable", raw_bytes(b"")),
    _image("truncated JPEG", "unreadable", truncated_jpeg),
    _image("text file named .jpg", "unreadable", raw_bytes(b"not an image\n" * 8)),
    _image("HTML page named .jpg", "unreadable", raw_bytes(b"<html><body>404</body></html>")),
    _image("PNG named .jpg", "ok", saved("PNG")),
    _image("animated GIF named .jpg", "ok", animated_gif),
    _image("WebP named .jpg", "ok", saved("WEBP")),
    _image("BMP named .jpg", "ok", saved("BMP")),
    _image("TIFF named .jpg", "ok", saved("TIFF")),
    _image("CMYK JPEG", "ok", saved("JPEG", "CMYK")),
    _image("grayscale JPEG", "ok", saved("JPEG", "L")),
    _image("palette PNG with transparency", "ok", palette_png_with_transparency),
    _image("RGBA PNG", "ok", saved("PNG", "RGBA")),
    _image("16-bit grayscale PNG", "ok", sixteen_bit_png),
    _image("1x1 image", "ok", saved("JPEG", side=1)),
    _image("decompression bomb", "too_large", raw_bytes(png_header_only(20_000, 20_000))),
    _image("image over the pixel cap", "too_large", raw_bytes(png_header_only(8_000, 8_000))),
    _image("folder named like an image", "unreadable", folder),
    _image(
        "symlink to a non-image outside the folder",
        "unreadable",
        link_outside("notes.txt", raw_bytes(b"just text")),
    ),
    _image("symlink to a real image outside the folder", "ok", link_outside("real.jpg", jpeg)),
    _image("dangling symlink", "missing", link_outside("gone.jpg", None)),
    _ids("negative productid", productid="-5"),
    _ids("huge imageid (10^30)", imageid=str(10**30)),
    _ids("19-digit imageid", imageid="9223372036854775807"),
    _ids("non-numeric productid", productid="12a"),
    _ids("empty imageid", imageid=""),
    _ids("exponent imageid", imageid="1e3"),
    RowCase("non-numeric row index", "ok", index="abc"),
    RowCase("ids with spaces and a .0 tail", "ok", productid=" 7001 ", imageid="9001.0"),
)

#: Two rows with the same productid and imageid (one image), and the same row index.
DUPLICATES: tuple[RowCase, ...] = (
    RowCase("duplicate ids and index (first)", "ok", productid="8001", imageid="8002", index="777"),
    RowCase(
        "duplicate ids and index (second)",
        "ok",
        image=None,  # the first row wrote it
        productid="8001",
        imageid="8002",
        index="777",
    ),
)

ALL_CASES = CASES + DUPLICATES


@dataclass(frozen=True)
class Corpus:
    """The written corpus: the input CSV, the image folder, and the row cases in order."""

    csv: Path
    image_dir: Path
    cases: tuple[RowCase, ...]

    @property
    def statuses(self) -> list[str]:
        return [case.status for case in self.cases]


def _cell_bytes(cell: Cell) -> bytes:
    """A cell, always quoted, its quotes doubled (RFC 4180)."""
    raw = cell if isinstance(cell, bytes) else str(cell).encode("utf-8")
    return b'"' + raw.replace(b'"', b'""') + b'"'


def _row_cells(position: int, case: RowCase) -> list[Cell]:
    productid = case.productid if case.productid is not None else str(1000 + position)
    imageid = case.imageid if case.imageid is not None else str(5000 + position)
    index = case.index if case.index is not None else str(position)
    cells = [index, case.designation, case.description, productid, imageid]
    return [*cells[: case.fields], *case.surplus]


def _image_file(image_dir: Path, cells: list[Cell]) -> Path:
    productid, imageid = (str(cells[i]).strip().split(".")[0] for i in (3, 4))
    return image_path(image_dir, int(imageid), int(productid))


def expected_index(case: RowCase, position: int) -> int | None:
    """The ``index`` the predictions carry for a case's row (null when not an integer)."""
    cell = _row_cells(position, case)[0]
    return int(cell) if isinstance(cell, str) and cell.isdigit() else None


def write_corpus(root: Path) -> Corpus:
    """Write the CSV (with a UTF-8 byte-order mark, as spreadsheets save it) and the images."""
    image_dir, outside = root / "images", root / "elsewhere"
    image_dir.mkdir(parents=True)
    outside.mkdir()
    header = b"\xef\xbb\xbf" + b",".join(c.encode() for c in ("", *X_COLUMNS))
    lines = [header]
    for position, case in enumerate(ALL_CASES):
        cells = _row_cells(position, case)
        lines.append(b",".join(_cell_bytes(c) for c in cells))
        if case.image is not None:
            case.image(_image_file(image_dir, cells), outside)
    csv_path = root / "hostile.csv"
    csv_path.write_bytes(b"\r\n".join(lines) + b"\r\n")
    return Corpus(csv_path, image_dir, ALL_CASES)
