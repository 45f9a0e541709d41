"""Input rows of a scoring run: locating inputs, checking headers, normalising batches.

A missing column, an unreadable header or an input without rows is refused before any work.
Row-level problems never stop a run: text that is missing or not text becomes an empty string
(cleaned later, capped in length), fields past the header's are ignored, and an id that is
not a non-negative integer becomes null, so its row is scored from text alone with
``image_status = "invalid_id"``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow.fs import FileType

from rakuten_ray import storage
from rakuten_ray.catalog import (
    ID_COLUMNS,
    IMAGE_BYTES_COLUMN,
    IMAGE_COLUMNS,
    X_COLUMNS,
    SchemaError,
    image_filename,
)
from rakuten_ray.layout import CONTENT_HASH_COLUMN, INDEX_COLUMN, ROW_COLUMN
from rakuten_ray.storage import Location, StorageError

INPUT_SUFFIXES = (".csv", ".parquet")
_ID_RE = re.compile(r"\d{1,18}(?:\.0*)?")


def input_files(source: Location) -> list[str]:
    """One file, or every ``.csv`` / ``.parquet`` file of a folder (sorted), as inputs; a
    local path or an object-storage URI (:mod:`rakuten_ray.storage`).

    Raises:
        SchemaError: nothing to read, or a mix of CSV and Parquet.
        StorageError: the store refuses or cannot be reached.
    """
    found = storage.info(source)
    if found.type == FileType.Directory:
        files = [f for f in storage.list_files(source) if suffix(f) in INPUT_SUFFIXES]
    elif found.type == FileType.File:
        files = [str(source)]
    else:
        raise SchemaError(f"{source}: input not found")
    if not files:
        raise SchemaError(f"{source}: no .csv or .parquet input files")
    if len({suffix(f) for f in files}) > 1:
        raise SchemaError(f"{source}: mixes CSV and Parquet inputs; use one format per run")
    return files


def suffix(location: Location) -> str:
    """A file's extension (``.csv``), for a path or a URI alike."""
    return PurePosixPath(storage.name(location)).suffix


def _is_record(fields: list[str]) -> bool:
    """Whether a CSV record is a row for pandas, which skips blank and whitespace-only lines."""
    return bool(fields) and not (len(fields) == 1 and fields[0] and not fields[0].strip())


def _peek(path: Location) -> tuple[list[str], bool]:
    """Column names of one input file and whether it has a row, read without its rows."""
    if suffix(path) == ".parquet":
        try:
            with storage.open_input(path) as handle:
                parquet = pq.ParquetFile(handle)
                return list(parquet.schema_arrow.names), parquet.metadata.num_rows > 0
        except (OSError, pa.ArrowException) as exc:
            raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from exc
    # "utf-8-sig" drops a leading byte-order mark (spreadsheet exports), as pandas does.
    with storage.open_input(path) as raw:
        handle = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        records = csv.reader(handle)
        try:
            header = next(records, [])
        except csv.Error as exc:  # e.g. an unclosed quote that swallows the whole file
            raise SchemaError(f"{path}: unreadable CSV header ({exc})") from exc
        try:
            return header, any(_is_record(fields) for fields in records)
        except csv.Error:
            return header, True  # something follows the header: the reader will judge it


def check_headers(files: Sequence[Location]) -> str | None:
    """Refuse, before any work, a file that lacks a required column, or inputs with no row;
    returns the image column the inputs carry (:data:`IMAGE_COLUMNS`), if any.

    A CSV's first column is its unnamed row index (the challenge's layout); a Parquet file
    carries the row index in a column named ``index`` (as the predictions do), and may carry
    each row's image in one of :data:`IMAGE_COLUMNS`, the same one in every file.
    """
    has_rows = False
    carried: set[str | None] = set()
    for path in files:
        header, rows = _peek(path)
        if suffix(path) == ".csv":
            if not header or header[0] != "":
                raise SchemaError(f"{path}: the first column must be the unnamed row index")
            header = [INDEX_COLUMN, *header[1:]]
        missing = [c for c in (INDEX_COLUMN, *X_COLUMNS) if c not in header]
        if missing:
            raise SchemaError(f"{path}: missing column(s) {missing}; found {header}")
        images = [c for c in IMAGE_COLUMNS if c in header] if suffix(path) == ".parquet" else []
        if len(images) > 1:
            raise SchemaError(f"{path}: carries both {images}; keep one image column")
        carried.add(images[0] if images else None)
        has_rows = has_rows or rows
    if len(carried) > 1:
        raise SchemaError(
            f"{_inputs_name(files)}: the files carry different image columns "
            f"({sorted(map(str, carried))}); use one layout per run"
        )
    if not has_rows:
        raise SchemaError(f"{_inputs_name(files)}: no rows to score (a header alone)")
    return carried.pop()


def _inputs_name(files: Sequence[Location]) -> str:
    """The input as a message names it: its one file, or the folder of its files."""
    first = str(files[0])
    return first if len(files) == 1 else first[: -len(storage.name(first)) - 1]


def _str(value: object) -> str:
    text = str(value)
    if text.isascii():
        return text
    # A lone surrogate (text decoded with "surrogateescape", say) cannot be stored as UTF-8,
    # which Arrow-backed strings and Parquet require: it becomes U+FFFD, as bytes that are
    # not UTF-8 do in the CSV reader.
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _texts(values: pd.Series) -> list[str]:
    """Each value as text (missing: ``""``), in a plain loop: per batch it costs a few
    microseconds a row and none of pandas' fixed cost per call, which counts when a request
    brings one product."""
    missing = values.isna().to_numpy()
    values = values.to_numpy(object)
    return ["" if gone else _str(value) for value, gone in zip(values, missing, strict=True)]


def _as_text(values: pd.Series) -> pd.Series:
    return pd.Series(_texts(values), index=values.index, dtype=object)


def as_id(values: pd.Series) -> pd.Series:
    """Ids as nullable ``Int64``: null where a value is not a valid integer."""
    # Python ints, not a float round trip: an 18-digit id stays exact, and a batch whose ids
    # are all invalid gives an all-null column instead of a column pandas types as float.
    parsed = []
    for text in _texts(values):
        text = text.strip()
        parsed.append(int(text.split(".", 1)[0]) if _ID_RE.fullmatch(text) else None)
    return pd.array(parsed, dtype="Int64")


def normalise_batch(batch: pd.DataFrame) -> pd.DataFrame:
    """The scoring columns with fixed types, whatever the reader inferred.

    Returns:
        ``row`` as int64; ``index`` and the ids as nullable ``Int64`` (null where not a
        valid integer); ``designation`` and ``description`` as ``str``.
    """
    # Built from whole columns at once: assigning them one by one cost milliseconds per
    # batch, as much as a model on a request's one product.
    out = {
        ROW_COLUMN: batch[ROW_COLUMN].to_numpy(dtype=np.int64),
        INDEX_COLUMN: as_id(batch[INDEX_COLUMN]),
        **{c: np.array(_texts(batch[c]), dtype=object) for c in ("designation", "description")},
        **{column: as_id(batch[column]) for column in ID_COLUMNS},
    }
    if CONTENT_HASH_COLUMN in batch.columns:  # staged rows carry it to their predictions
        out[CONTENT_HASH_COLUMN] = batch[CONTENT_HASH_COLUMN].to_numpy()
    for column in IMAGE_COLUMNS:
        if column in batch.columns:
            # Arrow-typed, so that Ray Data hands the column between stages as Arrow binary
            # or string rather than as a column of Python objects.
            values = _image_column(batch[column].reset_index(drop=True), column)
            out[column] = pd.arrays.ArrowExtensionArray(values)
    return pd.DataFrame(out, index=np.arange(len(batch)))


def _raw_chunks(path: Location, rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows as text columns, ``rows`` at a time (memory stays bounded).

    Raises:
        SchemaError: the file's body cannot be parsed (its header passed the check).
    """
    with storage.open_input(path) as handle:
        if suffix(path) == ".parquet":
            yield from _parquet_chunks(path, handle, rows)
        else:
            yield from _csv_chunks(path, handle, rows)


def _parquet_chunks(path: Location, handle: BinaryIO, rows: int) -> Iterator[pd.DataFrame]:
    try:
        parquet = pq.ParquetFile(handle)
        images = [c for c in IMAGE_COLUMNS if c in parquet.schema_arrow.names]
        columns = [INDEX_COLUMN, *X_COLUMNS, *images]
        for batch in parquet.iter_batches(batch_size=rows, columns=columns):
            yield batch.to_pandas().astype(object)
    except (OSError, pa.ArrowException) as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from exc


def _csv_chunks(path: Location, handle: BinaryIO, rows: int) -> Iterator[pd.DataFrame]:
    # index_col=False with a usecols callable keeps every row's first field as the row index
    # even when rows carry more fields than the header (a trailing delimiter, an unquoted
    # comma): the surplus fields are ignored instead of shifting the columns or failing.
    try:
        chunks = pd.read_csv(
            handle, dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="replace",
            chunksize=rows, index_col=False, usecols=lambda _: True,
        )  # fmt: skip
        for chunk in chunks:
            yield _scoring_columns(path, chunk)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SchemaError(f"{path}: not a readable CSV file ({exc})") from exc


def _scoring_columns(path: Location, chunk: pd.DataFrame) -> pd.DataFrame:
    """The row index (the first column, by position) and the X columns of a CSV chunk."""
    missing = [c for c in X_COLUMNS if c not in chunk.columns]
    if missing:
        # The header check and pandas can disagree on a malformed header line.
        raise SchemaError(f"{path}: missing column(s) {missing}; found {list(chunk.columns)}")
    index = chunk.iloc[:, 0].rename(INDEX_COLUMN)
    return pd.concat([index, chunk[list(X_COLUMNS)]], axis=1)


def _image_column(values: pd.Series, column: str) -> pa.Array:
    """A carried image column with one Arrow type in every shard (a chunk of nulls alone
    would otherwise be typed ``null``); a value of the wrong type becomes null, which the
    image stage reports as ``missing``."""
    if column == IMAGE_BYTES_COLUMN:
        kept = [v if isinstance(v, bytes) else None for v in values]
        return pa.array(kept, type=pa.binary())
    kept = [v if isinstance(v, str) and v.strip() else None for v in values]
    return pa.array(kept, type=pa.string())


def _read_or_marker(location: Location) -> bytes:
    """A file's bytes; a marker for no file, or one that cannot be read (scored as such, so
    hashed as such)."""
    try:
        data = storage.read_bytes(location)
    except StorageError:
        return b"\x00unreadable"
    return b"\x00no file" if data is None else data


def _image_bytes(table: pa.Table, image_dir: Location | None) -> Iterator[bytes]:
    """Each staged row's image as the image stage will read it: the input's own image
    column (:data:`IMAGE_COLUMNS`) when it has one, else the file named by the row's ids in
    ``image_dir``."""
    carried = [c for c in IMAGE_COLUMNS if c in table.column_names]
    if carried and carried[0] == IMAGE_BYTES_COLUMN:
        yield from (b"\x00no bytes" if v is None else v for v in table[carried[0]].to_pylist())
    elif carried:
        yield from (
            b"\x00no file" if v is None else _read_or_marker(v)
            for v in table[carried[0]].to_pylist()
        )
    else:
        imageids, productids = (as_id(table[c].to_pandas()) for c in ("imageid", "productid"))
        for imageid, productid in zip(imageids, productids, strict=True):
            if pd.isna(imageid) or pd.isna(productid):
                yield b"\x00invalid id"
            else:
                yield _read_or_marker(
                    storage.join(image_dir, image_filename(int(imageid), int(productid)))
                )


def content_hashes(table: pa.Table, image_dir: Location | None, images: bool) -> list[str]:
    """Each staged row's content digest: its texts and ids as staged and, when ``images``
    are scored (a bundle with image models), its image's bytes (:func:`_image_bytes`). Each
    field is length-prefixed so that no two different rows share a digest by shifting text
    between fields."""
    columns = [table[c].to_pylist() for c in X_COLUMNS]
    pictures = _image_bytes(table, image_dir) if images else None
    digests = []
    for fields in zip(*columns, strict=True):
        digest = hashlib.blake2b(digest_size=16)
        parts = [field.encode("utf-8") for field in fields]
        if pictures is not None:
            parts.append(next(pictures))
        for part in parts:
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
        digests.append(digest.hexdigest())
    return digests


def stage_inputs(
    files: Sequence[Location], staging_dir: Path, rows_per_shard: int,
    image_dir: Location | None = None, images: bool = False,
) -> int:  # fmt: skip
    """Copy the inputs into numbered Parquet shards with a global ``row`` position and each
    row's content digest (:func:`content_hashes`; ``images`` when images are scored, from
    the input's image column or ``image_dir``).

    Shards give large inputs many read tasks, let a resumed run see which rows are done,
    and let the submission follow input order. The input is read ``rows_per_shard`` rows at
    a time, so staging holds one shard in memory whatever the input's size. The caller
    checks the headers first (:func:`check_headers`), before any output exists. Returns the
    number of rows.
    """
    staging_dir.mkdir(parents=True, exist_ok=True)
    position, shard = 0, 0
    for path in files:
        for chunk in _raw_chunks(path, rows_per_shard):
            frame = chunk[[INDEX_COLUMN, *X_COLUMNS]].apply(_as_text).reset_index(drop=True)
            frame.insert(0, ROW_COLUMN, np.arange(position, position + len(frame)))
            table = pa.Table.from_pandas(frame, preserve_index=False)
            for column in IMAGE_COLUMNS:
                if column in chunk.columns:
                    table = table.append_column(column, _image_column(chunk[column], column))
            hashes = pa.array(content_hashes(table, image_dir, images), type=pa.string())
            table = table.append_column(CONTENT_HASH_COLUMN, hashes)
            pq.write_table(table, staging_dir / f"shard-{shard:05d}.parquet")
            position, shard = position + len(frame), shard + 1
    if not position:
        # check_headers refuses inputs without rows; this guards its peek at the records.
        raise SchemaError(f"{_inputs_name(files)}: no rows to score")
    return position
