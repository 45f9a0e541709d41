"""Tables of a whole run's rows handled without holding them in one process: cut into
partitions on disk, then read back one partition at a time.

Sorting the predictions into input order, and matching rows with a previous output's by a
key, both go through here: a partition holds the rows of one range of positions or of one
share of the keys, so the driver's memory follows the partition's size, not the input's.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

#: Rows a partition holds, about: what the driver reads at once when it finishes a run.
ROWS_PER_PARTITION = 200_000
#: Rows read from a Parquet file at a time while partitioning it.
READ_ROWS = 65_536


def partition_count(rows: int, per_partition: int = ROWS_PER_PARTITION) -> int:
    """Partitions for ``rows`` rows at ``per_partition`` each (at least one)."""
    return max(1, -(-rows // per_partition))


def hash_partition(keys: pd.Series, count: int) -> np.ndarray:
    """The partition of each key among ``count`` (-1 for a null key, which matches none)."""
    hashed = pd.util.hash_array(keys.to_numpy(dtype=object, na_value=None)) % np.uint64(count)
    return np.where(keys.isna().to_numpy(), -1, hashed.astype(np.int64))


def parquet_batches(files: list[Path], columns: list[str]) -> Iterator[pd.DataFrame]:
    """The ``columns`` of each file, :data:`READ_ROWS` rows at a time."""
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=READ_ROWS, columns=columns):
            yield batch.to_pandas()


def string_nulls(schema: pa.Schema) -> pa.Schema:
    """``schema`` with its null-typed fields typed as strings: an object column (a review
    reason, say) that is null throughout a batch, or empty, has no type of its own, and every
    table written to one file must have the type of the first."""
    fields = [pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in schema]
    return pa.schema(fields, metadata=schema.metadata)


class Partitions:
    """Appends rows to one Parquet file per partition under ``folder``.

    Args:
        folder: created if absent; each partition is ``part-NNNNN.parquet`` there.
        count: how many partitions.
    """

    def __init__(self, folder: Path, count: int) -> None:
        self.folder = folder
        self.count = count
        self._writers: dict[int, pq.ParquetWriter] = {}
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, partition: int) -> Path:
        return self.folder / f"part-{partition:05d}.parquet"

    def add(self, frame: pd.DataFrame, partition: np.ndarray) -> None:
        """Append each row of ``frame`` to its ``partition`` (rows at -1 are dropped)."""
        order = np.argsort(partition, kind="stable")
        ids, starts = np.unique(partition[order], return_index=True)
        ends = [*starts[1:], len(order)]
        for part, start, end in zip(ids, starts, ends, strict=True):
            if part < 0:
                continue
            table = pa.Table.from_pandas(frame.iloc[order[start:end]], preserve_index=False)
            table = table.cast(string_nulls(table.schema))
            if part not in self._writers:
                self._writers[part] = pq.ParquetWriter(self.path(part), table.schema)
            self._writers[part].write_table(table.cast(self._writers[part].schema))

    def close(self) -> None:
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def read(self, partition: int) -> pd.DataFrame | None:
        """The rows of ``partition``; None when none went there."""
        path = self.path(partition)
        return pd.read_parquet(path) if path.is_file() else None


def partition_pairs(
    left: Iterable[pd.DataFrame], right: Iterable[pd.DataFrame], key: str, count: int,
    scratch: Path,
) -> Iterator[tuple[pd.DataFrame, pd.DataFrame]]:  # fmt: skip
    """Each pair of partitions of ``left`` and ``right`` rows whose ``key`` falls in the same
    one of ``count`` partitions (rows with a null key in none), for a join one partition at
    a time; ``scratch`` holds them and is removed once the pairs are consumed."""
    sides = Partitions(scratch / "left", count), Partitions(scratch / "right", count)
    for side, batches in zip(sides, (left, right), strict=True):
        for batch in batches:
            side.add(batch, hash_partition(batch[key], count))
        side.close()
    for part in range(count):
        first, second = sides[0].read(part), sides[1].read(part)
        if first is not None and second is not None:
            yield first, second
    shutil.rmtree(scratch)
