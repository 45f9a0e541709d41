"""The prediction files: one Arrow schema for both engines, files of a set number of rows.

Both engines hand their predictions to :func:`predictions_table` before writing, so the
Parquet files carry the same columns, types and pandas metadata whichever engine wrote them
(pandas reads the ids back as ``Int64`` from either). Files hold ``rows_per_output_file``
rows each, the last of a run (or of each Ray write task) fewer.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rakuten_ray.layout import PREDICTION_DTYPES, ROW_COLUMN


def predictions_table(frame: pd.DataFrame) -> pa.Table:
    """A batch of predictions as an Arrow table of the one prediction schema."""
    typed = frame[list(PREDICTION_DTYPES)].astype(PREDICTION_DTYPES)
    return pa.Table.from_pandas(typed, preserve_index=False)


class PredictionFiles:
    """Writes predictions into ``folder`` in files of ``rows_per_file`` rows.

    Each file is written under a temporary name and renamed, so an interrupted run leaves
    only whole files; the file name carries its first ``row``.
    """

    def __init__(self, folder: Path, rows_per_file: int, prefix: str = "local") -> None:
        self.folder = folder
        self.rows_per_file = rows_per_file
        self.prefix = prefix
        self._pending: list[pd.DataFrame] = []
        self._rows = 0

    def add(self, frame: pd.DataFrame) -> None:
        """Queue a batch; every full file's worth of rows is written at once."""
        self._pending.append(frame)
        self._rows += len(frame)
        while self._rows >= self.rows_per_file:
            queued = pd.concat(self._pending, ignore_index=True)
            self._write(queued.iloc[: self.rows_per_file])
            rest = queued.iloc[self.rows_per_file :]
            self._pending, self._rows = [rest], len(rest)

    def close(self) -> None:
        """Write what is left (a last, shorter file)."""
        if self._rows:
            self._write(pd.concat(self._pending, ignore_index=True))
        self._pending, self._rows = [], 0

    def _write(self, frame: pd.DataFrame) -> None:
        first = int(frame[ROW_COLUMN].iloc[0])
        final = self.folder / f"{self.prefix}-{first:012d}-{len(frame)}.parquet"
        partial = self.folder / f".{final.name}.tmp"
        pq.write_table(predictions_table(frame), partial)
        partial.rename(final)
