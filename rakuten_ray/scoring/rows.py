"""Input rows of a scoring run: locating inputs, checking headers, normalising batches.

A missing column is refused before any work. Row-level problems never stop a run: text that
is missing or not text becomes an empty string (cleaned later, capped in length), and an id
that is not a non-negative integer becomes null, so its row is scored from text alone with
``image_status = "invalid_id"``.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from rakuten_ray.catalog import ID_COLUMNS, X_COLUMNS, SchemaError

#: The input's row index travels under this column name and comes out under it.
INDEX_COLUMN = "index"
#: 0-based position of a row in the whole input: the key that resuming and ordering use.
ROW_COLUMN = "row"
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


def _header(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    with open(path, encoding="utf-8", errors="replace", newline="") as handle:
        return next(csv.reader(handle), [])


def check_headers(files: list[Path]) -> None:
    """Refuse, before any work, a file that lacks a required column.

    A CSV's first column is its unnamed row index (the challenge's layout); a Parquet file
    carries the row index in a column named ``index`` (as the predictions do).
    """
    for path in files:
        header = _header(path)
        if path.suffix == ".csv":
            if not header or header[0] != "":
                raise SchemaError(f"{path}: the first column must be the unnamed row index")
            header = [INDEX_COLUMN, *header[1:]]
        missing = [c for c in (INDEX_COLUMN, *X_COLUMNS) if c not in header]
        if missing:
            raise SchemaError(f"{path}: missing column(s) {missing}; found {header}")


def _as_text(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), "").map(str)


def _as_id(values: pd.Series) -> pd.Series:
    text = _as_text(values).str.strip()
    valid = text.str.fullmatch(_ID_PATTERN)
    parsed = text.where(valid, None).str.split(".", n=1).str[0]
    return pd.array(parsed, dtype="Int64")


def normalise_batch(batch: pd.DataFrame) -> pd.DataFrame:
    """The scoring columns with fixed types, whatever the reader inferred.

    Returns:
        ``row`` as int64; ``index`` and the ids as nullable ``Int64`` (null where not a
        valid integer); ``designation`` and ``description`` as ``str``.
    """
    out = pd.DataFrame(index=np.arange(len(batch)))
    out[ROW_COLUMN] = batch[ROW_COLUMN].to_numpy(dtype=np.int64)
    out[INDEX_COLUMN] = _as_id(batch[INDEX_COLUMN].reset_index(drop=True))
    for column in ("designation", "description"):
        out[column] = _as_text(batch[column].reset_index(drop=True)).to_numpy()
    for column in ID_COLUMNS:
        out[column] = _as_id(batch[column].reset_index(drop=True))
    return out


def _raw_chunks(path: Path, rows: int) -> Iterator[pd.DataFrame]:
    """The file's rows as text columns, ``rows`` at a time (memory stays bounded)."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=rows, columns=[INDEX_COLUMN, *X_COLUMNS]):
            yield batch.to_pandas().astype(object)
        return
    chunks = pd.read_csv(
        path, dtype=str, keep_default_na=False, encoding="utf-8", encoding_errors="replace",
        chunksize=rows,
    )  # fmt: skip
    for chunk in chunks:
        yield chunk.rename(columns={chunk.columns[0]: INDEX_COLUMN})


def stage_inputs(files: list[Path], staging_dir: Path, rows_per_shard: int) -> int:
    """Copy the inputs into numbered Parquet shards with a global ``row`` position.

    Shards give large inputs many read tasks, let a resumed run see which rows are done,
    and let the submission follow input order. The caller checks the headers first
    (:func:`check_headers`), before any output exists. Returns the number of rows.
    """
    staging_dir.mkdir(parents=True, exist_ok=True)
    position, shard = 0, 0
    for path in files:
        for chunk in _raw_chunks(path, rows_per_shard):
            frame = chunk[[INDEX_COLUMN, *X_COLUMNS]].apply(_as_text).reset_index(drop=True)
            frame.insert(0, ROW_COLUMN, np.arange(position, position + len(frame)))
            frame.to_parquet(staging_dir / f"shard-{shard:05d}.parquet", index=False)
            position, shard = position + len(frame), shard + 1
    return position
