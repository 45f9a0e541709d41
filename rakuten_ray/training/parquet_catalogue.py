"""A labelled catalogue as Parquet: the training input that mirrors scoring's Parquet input.

One ``.parquet`` file or a folder of them, local or in object storage. Each row carries the
X columns, ``prdtypecode``, its row index in an ``index`` column (as scoring's Parquet input
and the predictions do) and optionally its image, as encoded bytes in ``image`` or as a
local path or object-storage URI in ``image_uri`` (:data:`~rakuten_ray.catalog.IMAGE_COLUMNS`).

Every file is checked before anything is written (:func:`read_catalogue`); then each row's
image is given a local file (:func:`materialise_images`), so that training reads an
``image_path`` per row exactly as it does for the raw layout.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow.fs import FileType

from rakuten_ray import storage
from rakuten_ray.catalog import (
    IMAGE_BYTES_COLUMN,
    IMAGE_COLUMNS,
    IMAGE_URI_COLUMN,
    LABEL_COLUMN,
    MAX_QUOTED_ROWS,
    X_COLUMNS,
    SchemaError,
    image_filename,
    parse_index,
    validate_labels,
    validate_products,
)
from rakuten_ray.layout import INDEX_COLUMN
from rakuten_ray.storage import Location

PARQUET_SUFFIX = ".parquet"
#: Rows whose images are held in memory at once while they are written.
ROWS_PER_BATCH = 256
#: Images downloaded at once from object storage (each request waits mostly on the network).
DOWNLOAD_THREADS = 16
#: The cache folder (:func:`rakuten_ray.storage.cache_dir`) of materialised images.
CACHE_KIND = "training-images"

_Check = Callable[[pa.DataType], bool]


def _integer_or_text(kind: pa.DataType) -> bool:
    # Text of digits is read as the CSV's cells are; floats are refused, as they cannot
    # carry an 18-digit id exactly.
    return pa.types.is_integer(kind) or _text(kind)


def _text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)


def _binary(kind: pa.DataType) -> bool:
    return pa.types.is_binary(kind) or pa.types.is_large_binary(kind) or pa.types.is_null(kind)


#: Each column a labelled Parquet catalogue reads, with the Arrow types it accepts.
COLUMN_TYPES: dict[str, tuple[_Check, str]] = {
    INDEX_COLUMN: (_integer_or_text, "integers"),
    "designation": (_text, "text"),
    "description": (_text, "text"),
    "productid": (_integer_or_text, "integers"),
    "imageid": (_integer_or_text, "integers"),
    LABEL_COLUMN: (_integer_or_text, "integers"),
    IMAGE_BYTES_COLUMN: (_binary, "bytes"),
    IMAGE_URI_COLUMN: (_text, "text"),
}
REQUIRED_COLUMNS = (INDEX_COLUMN, *X_COLUMNS, LABEL_COLUMN)


@dataclass(frozen=True)
class ParquetCatalogue:
    """The checked rows of a Parquet catalogue and where they came from.

    ``rows`` holds the X columns and ``prdtypecode`` indexed by the row index, in file
    order, plus ``image_uri`` when the files carry it; ``image_column`` is the image column
    the files carry, if any.
    """

    source: str
    files: tuple[str, ...]
    rows: pd.DataFrame
    image_column: str | None


def parquet_files(source: Location) -> list[str]:
    """The ``.parquet`` files of ``source``: the file itself, or a folder's (sorted).

    Raises:
        SchemaError: nothing there, a file that is not ``.parquet``, or a folder without one.
        StorageError: the store refuses or cannot be reached.
    """
    found = storage.info(source)
    if found.type == FileType.NotFound:
        raise SchemaError(f"{source}: catalogue not found")
    if found.type == FileType.File:
        if not str(source).endswith(PARQUET_SUFFIX):
            raise SchemaError(
                f"{source}: a catalogue file must be {PARQUET_SUFFIX}; give the raw layout's "
                f"folder, not one of its files"
            )
        return [str(source)]
    files = [f for f in storage.list_files(source) if f.endswith(PARQUET_SUFFIX)]
    if not files:
        raise SchemaError(
            f"{source}: neither the raw layout (no X_train_update.csv) nor {PARQUET_SUFFIX} files"
        )
    return files


def _check_schema(path: str, schema: pa.Schema) -> str | None:
    """Refuse a missing column or one of the wrong type; the image column carried, if any."""
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise SchemaError(f"{path}: missing column(s) {missing}; found {schema.names}")
    for column, (accepts, expected) in COLUMN_TYPES.items():
        if column in schema.names and not accepts(schema.field(column).type):
            kind = schema.field(column).type
            raise SchemaError(f"{path}: column {column!r} holds {kind}; expected {expected}")
    images = [c for c in IMAGE_COLUMNS if c in schema.names]
    if len(images) > 1:
        raise SchemaError(f"{path}: carries both {images}; keep one image column")
    return images[0] if images else None


def _read_file(path: str) -> tuple[pd.DataFrame, str | None]:
    """One file's rows, checked (its image bytes are not read); and its image column."""
    try:
        with storage.open_input(path) as handle:
            parquet = pq.ParquetFile(handle)
            image_column = _check_schema(path, parquet.schema_arrow)
            columns = [*REQUIRED_COLUMNS]
            if image_column == IMAGE_URI_COLUMN:
                columns.append(IMAGE_URI_COLUMN)
            # Python ints with None for nulls: no float round trip for an id column with nulls.
            table = parquet.read(columns=columns).to_pandas(integer_object_nulls=True)
    except (OSError, pa.ArrowException) as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from exc
    index = parse_index(path, table[INDEX_COLUMN])
    table = table.drop(columns=INDEX_COLUMN).set_axis(pd.Index(index), axis=0)
    rows = validate_products(table, path)
    rows[LABEL_COLUMN] = validate_labels(table, path)
    if image_column == IMAGE_URI_COLUMN:
        # As scoring reads it: a null or blank URI is no image.
        uris = [u if isinstance(u, str) and u.strip() else None for u in table[IMAGE_URI_COLUMN]]
        rows[IMAGE_URI_COLUMN] = pd.Series(uris, index=rows.index, dtype=object)
    return rows, image_column


def read_catalogue(source: Location) -> ParquetCatalogue:
    """Read and check every file of a Parquet catalogue, before any work.

    Raises:
        SchemaError: naming the file and column: a column missing or of the wrong type, an
            id or index that is not an integer, an unknown code, a row index used twice
            (within or across files), both image columns, files carrying different image
            columns, or no row at all.
        StorageError: the store refuses or cannot be reached.
    """
    files = parquet_files(source)
    frames, carried = [], set()
    for path in files:
        rows, image_column = _read_file(path)
        frames.append(rows)
        carried.add(image_column)
    if len(carried) > 1:
        raise SchemaError(
            f"{source}: the files carry different image columns ({sorted(map(str, carried))}); "
            "use one layout per catalogue"
        )
    rows = pd.concat(frames)
    if rows.empty:
        raise SchemaError(f"{source}: no labelled rows")
    reused = rows.index[rows.index.duplicated()].unique()
    if len(reused):
        raise SchemaError(
            f"{source}: row index used in more than one file: {list(reused[:MAX_QUOTED_ROWS])}"
        )
    return ParquetCatalogue(str(source), tuple(files), rows, carried.pop())


def _cache_key(catalogue: ParquetCatalogue) -> str:
    """The images folder's name: the catalogue's location and each file's size and time, so
    that a rewritten file gets a folder of its own."""
    digest = hashlib.sha256(catalogue.source.encode())
    for path in catalogue.files:
        found = storage.info(path)
        digest.update(f"\0{path}\0{found.size}\0{found.mtime_ns}".encode())
    return digest.hexdigest()[:16]


def _image_batches(catalogue: ParquetCatalogue) -> Iterator[list[bytes | None]]:
    """The ``image`` column's values, file by file in row order, :data:`ROWS_PER_BATCH` at a
    time, so that a large catalogue's images are never all in memory."""
    for path in catalogue.files:
        try:
            with storage.open_input(path) as handle:
                parquet = pq.ParquetFile(handle)
                for batch in parquet.iter_batches(ROWS_PER_BATCH, columns=[IMAGE_BYTES_COLUMN]):
                    yield batch.column(0).to_pylist()
        except (OSError, pa.ArrowException) as exc:
            raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from exc


def _uri_batches(catalogue: ParquetCatalogue) -> Iterator[list[bytes | None]]:
    """The remote ``image_uri`` objects' bytes (``None`` for a local path, a null or an
    object that is not there), downloaded :data:`DOWNLOAD_THREADS` at a time."""
    uris = catalogue.rows[IMAGE_URI_COLUMN].tolist()
    with ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:
        for start in range(0, len(uris), ROWS_PER_BATCH):
            batch = uris[start : start + ROWS_PER_BATCH]
            remote = [u if u is not None and storage.is_remote(u) else None for u in batch]
            yield list(pool.map(lambda u: None if u is None else storage.read_bytes(u), remote))


class _Writer:
    """Writes each row's image once under the raw layout's file name, refusing two rows of
    the same ids whose images differ (one file name cannot hold both)."""

    def __init__(self, folder: Path, source: str) -> None:
        self.folder, self.source = folder, source
        self.written: dict[str, tuple[int, bytes]] = {}

    def write(self, index: int, name: str, data: bytes) -> None:
        digest = hashlib.blake2b(data, digest_size=16).digest()
        earlier = self.written.setdefault(name, (index, digest))
        if earlier[1] != digest:
            raise SchemaError(
                f"{self.source}: rows {earlier[0]} and {index} share imageid and productid "
                f"({name}) but carry different images"
            )
        if earlier[0] == index:
            (self.folder / name).write_bytes(data)


def _write_images(catalogue: ParquetCatalogue, folder: Path) -> None:
    rows = catalogue.rows
    names = [image_filename(i, p) for i, p in zip(rows["imageid"], rows["productid"], strict=True)]
    batches = (
        _image_batches(catalogue)
        if catalogue.image_column == IMAGE_BYTES_COLUMN
        else _uri_batches(catalogue)
    )
    writer, position = _Writer(folder, catalogue.source), 0
    for batch in batches:
        for offset, data in enumerate(batch):
            if data is not None:
                writer.write(int(rows.index[position + offset]), names[position + offset], data)
        position += len(batch)


def _images_folder(catalogue: ParquetCatalogue) -> Path:
    """This node's folder of the catalogue's materialised images, written now unless an
    earlier run wrote it; written under a temporary name and renamed when complete, so a
    folder under its final name is never partial."""
    cache = storage.cache_dir(CACHE_KIND)
    folder = cache / _cache_key(catalogue)
    if folder.is_dir():
        return folder
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=cache))
    try:
        if catalogue.image_column is not None:
            _write_images(catalogue, partial)
        os.rename(partial, folder)
    except OSError:
        if not folder.is_dir():  # not another run of the same data finishing first
            raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def materialise_images(catalogue: ParquetCatalogue) -> pd.DataFrame:
    """The catalogue's rows with an absolute ``image_path`` each, as the raw layout gives.

    Bytes are written as they are, a remote ``image_uri`` downloaded, both into a folder of
    this node's cache under the raw layout's file name; a local ``image_uri`` is used where it
    is. A row without an image (null, or an object that is not there) points at a file that
    does not exist, as a missing image file does in the raw layout: it trains the text
    models only.

    Raises:
        SchemaError: two rows of the same ids carry different images.
        StorageError: the store refuses a download.
    """
    folder = _images_folder(catalogue).resolve()
    rows = catalogue.rows
    paths = [
        str(folder / image_filename(i, p))
        for i, p in zip(rows["imageid"], rows["productid"], strict=True)
    ]
    if catalogue.image_column == IMAGE_URI_COLUMN:
        # A local path is read where it is, as scoring reads it (relative to the working dir).
        paths = [
            str(Path(u).absolute()) if u is not None and not storage.is_remote(u) else path
            for u, path in zip(rows[IMAGE_URI_COLUMN], paths, strict=True)
        ]
        rows = rows.drop(columns=IMAGE_URI_COLUMN)
    return rows.assign(image_path=paths)
