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
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from rakuten_ray.catalog import ID_COLUMNS, X_COLUMNS, SchemaError, image_path
from rakuten_ray.layout import CONTENT_HASH_COLUMN, INDEX_COLUMN, ROW_COLUMN

INPUT_SUFFIXES = (".csv", ".parquet")
_ID_PATTERN = r"\d{1,18}(?:\.0*)?"


def input_files(source: str | Path) -> list[Path]:
    """One file, or every ``.csv`` / ``.parquet`` file of a folder (sorted), as inputs.

    Raises:
        SchemaError: nothing to read, or a mix of CSV and Parquet.
    """
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix in INPUT_SUFFIXES and p.is_file())
    elif source.is_file():
        files = [source]
    else:
        raise SchemaError(f"{source}: input not found")
    if not files:
        raise SchemaError(f"{source}: no .csv or .parquet input files")
    if len({p.suffix for p in files}) > 1:
        raise SchemaError(f"{source}: mixes CSV and Parquet inputs; use one format per run")
    return files


def _is_record(fields: list[str]) -> bool:
    """Whether a CSV record is a row for pandas, which skips blank and whitespace-only lines."""
    return bool(fields) and not (len(fields) == 1 and fields[0] and not fields[0].strip())


def _peek(path: Path) -> tuple[list[str], bool]:
    """Column names of one input file and whether it has a row, read without its rows."""
    if path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            parquet = pq.ParquetFile(path)
            return list(parquet.schema_arrow.names), parquet.metadata.num_rows > 0
        except (OSError, pa.ArrowException) as exc:
            raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from exc
    # "utf-8-sig" drops a leading byte-order mark (spreadsheet exports), as pandas does.
    with open(path, encoding="utf-8-sig", errors="replace", newline="") as handle:
        records = csv.reader(handle)
        try:
            header = next(records, [])
        except csv.Error as exc:  # e.g. an unclosed quote that swallows the whole file
            raise SchemaError(f"{path}: unreadable CSV header ({exc})") from exc
        try:
            return header, any(_is_record(fields) for fields in records)
        except csv.Error:
            return header, True  # something follows the header: the reader will judge it


def check_headers(files: list[Path]) -> None:
    """Refuse, before any work, a file that lacks a required column, or inputs with no row.

    A CSV's first column is its unnamed row index (the challenge's layout); a Parquet file
    carries the row index in a column named ``index`` (as the predictions do).
    """
    has_rows = False
    for path in files:
        header, rows = _peek(path)
        if path.suffix == ".csv":
            if not header or header[0] != "":
                raise SchemaError(f"{path}: the first column must be the unnamed row index")
            header = [INDEX_COLUMN, *header[1:]]
        missing = [c for c in (INDEX_COLUMN, *X_COLUMNS) if c not in header]
        if missing:
            raise SchemaError(f"{path}: missing column(s) {missing}; found {header}")
        has_rows = has_rows or rows
    if not has_rows:
        raise SchemaError(f"{_inputs_name(files)}: no rows to score (a header alone)")


def _inputs_name(files: list[Path]) -> Path:
    """The input as a message names it: its one file, or the folder of its files."""
    return files[0] if len(files) == 1 else files[0].parent


def _str(value: object) -> str:
    text = str(value)
    if text.isascii():
        return text
    # A lone surrogate (text decoded with "surrogateescape", say) cannot be stored as UTF-8,
    # which Arrow-backed strings and Parquet require: it becomes U+FFFD, as bytes that are
    # not UTF-8 do in the CSV reader.
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


def _as_text(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), "").map(_str)


def as_id(values: pd.Series) -> pd.Series:
    """Ids as nullable ``Int64``: null where a value is not a valid integer."""
    text = _as_text(values).str.strip()
    valid = text.str.fullmatch(_ID_PATTERN).to_numpy(dtype=bool)
    digits = text.str.split(".", n=1).str[0]
    # Python ints, not a float round trip: an 18-digit id stays exact, and a batch whose ids
    # are all invalid gives an all-null column instead of a column pandas types as float.
    parsed = [int(d) if ok else None for d, ok in zip(digits, valid, strict=True)]
    return pd.array(parsed, dtype="Int64")


def normalise_batch(batch: pd.DataFrame) -> pd.DataFrame:
    """The scoring columns with fixed types, whatever the reader inferred.

    Returns:
        ``row`` as int64; ``index`` and the ids as nullable ``Int64`` (null where not a
        valid integer); ``designation`` and ``description`` as ``str``.
    """
    out = pd.DataFrame(index=np.arange(len(batch)))
    out[ROW_COLUMN] = batch[ROW_COLUMN].to_numpy(dtype=np.int64)
    out[INDEX_COLUMN] = as_id(batch[INDEX_COLUMN].reset_index(drop=True))
    for column in ("designation", "description"):
        out[column] = _as_text(batch[column].reset_index(drop=True)).to_numpy()
    for column in ID_COLUMNS:
        out[column] = as_id(batch[column].reset_index(drop=True))
    if CONTENT_HASH_COLUMN in batch.columns:  # staged rows carry it to their predictions
        out[CONTENT_HASH_COLUMN] = batch[CONTENT_HASH_COLUMN].to_numpy()
    return out


def _raw_chunks(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows as text columns, ``rows`` at a time (memory stays bounded).

    Raises:
        SchemaError: the file's body cannot be parsed (its header passed the check).
    """
    if path.suffix == ".parquet":
        yield from _parquet_chunks(path, rows)
    else:
        yield from _csv_chunks(path, rows)


def _parquet_chunks(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=rows, columns=[INDEX_COLUMN, *X_COLUMNS]):
            yield batch.to_pandas().astype(object)
    except (OSError, pa.ArrowException) as exc:
        raise SchemaError(f"{path}: not a readable Parquet file ({exc})") from exc


def _csv_chunks(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    # index_col=False with a usecols callable keeps every row's first field as the row index
    # even when rows carry more fields than the header (a trailing delimiter, an unquoted
    # comma): the surplus fields are ignored instead of shifting the columns or failing.
    try:
        chunks = pd.read_csv(
            path, dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="replace",
            chunksize=rows, index_col=False, usecols=lambda _: True,
        )  # fmt: skip
        for chunk in chunks:
            yield _scoring_columns(path, chunk)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise SchemaError(f"{path}: not a readable CSV file ({exc})") from exc


def _scoring_columns(path: Path, chunk: pd.DataFrame) -> pd.DataFrame:
    """The row index (the first column, by position) and the X columns of a CSV chunk."""
    missing = [c for c in X_COLUMNS if c not in chunk.columns]
    if missing:
        # The header check and pandas can disagree on a malformed header line.
        raise SchemaError(f"{path}: missing column(s) {missing}; found {list(chunk.columns)}")
    index = chunk.iloc[:, 0].rename(INDEX_COLUMN)
    return pd.concat([index, chunk[list(X_COLUMNS)]], axis=1)


def _image_bytes(image_dir: Path, imageid: object, productid: object) -> bytes:
    """The bytes of a row's image file; a marker that no file holds for a row without one."""
    if pd.isna(imageid) or pd.isna(productid):
        return b"\x00invalid id"
    try:
        return image_path(image_dir, int(imageid), int(productid)).read_bytes()
    except OSError:  # missing or unreadable: scored as such, so hashed as such
        return b"\x00no file"


def content_hashes(frame: pd.DataFrame, image_dir: Path | None) -> list[str]:
    """Each staged row's content digest: its texts and ids as staged and, with ``image_dir``
    (a bundle with image models), the bytes of its image file. Each field is length-prefixed
    so that no two different rows share a digest by shifting text between fields."""
    columns = [frame[c].tolist() for c in X_COLUMNS]
    ids = as_id(frame["imageid"]), as_id(frame["productid"])
    digests = []
    for position, fields in enumerate(zip(*columns, strict=True)):
        digest = hashlib.blake2b(digest_size=16)
        parts = [field.encode("utf-8") for field in fields]
        if image_dir is not None:
            parts.append(_image_bytes(image_dir, ids[0][position], ids[1][position]))
        for part in parts:
            digest.update(len(part).to_bytes(8, "little"))
            digest.update(part)
        digests.append(digest.hexdigest())
    return digests


def stage_inputs(
    files: list[Path], staging_dir: Path, rows_per_shard: int, image_dir: Path | None = None
) -> int:
    """Copy the inputs into numbered Parquet shards with a global ``row`` position and each
    row's content digest (:func:`content_hashes`; ``image_dir`` when images are scored).

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
            frame[CONTENT_HASH_COLUMN] = content_hashes(frame, image_dir)
            frame.to_parquet(staging_dir / f"shard-{shard:05d}.parquet", index=False)
            position, shard = position + len(frame), shard + 1
    if not position:
        # check_headers refuses inputs without rows; this guards its peek at the records.
        raise SchemaError(f"{_inputs_name(files)}: no rows to score")
    return position
