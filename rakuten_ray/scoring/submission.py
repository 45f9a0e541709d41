"""The submission file, written from the prediction files without loading them all.

The predictions come in no particular order (the Ray engine writes whichever batch is done
first). They are cut by row position into partitions on disk, and each partition, in order,
is checked to hold every one of its rows exactly once and appended to the submission: the
driver holds one partition at a time.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from rakuten_ray.layout import INDEX_COLUMN, ROW_COLUMN
from rakuten_ray.scoring.partitions import (
    ROWS_PER_PARTITION,
    Partitions,
    parquet_batches,
    partition_count,
)

_COLUMNS = [ROW_COLUMN, INDEX_COLUMN, "prdtypecode", "image_status"]


def write_submission(
    predictions: Path, total: int, submission: Path, scratch: Path,
    rows_per_partition: int = ROWS_PER_PARTITION,
) -> dict[str, int]:  # fmt: skip
    """Write ``submission`` (the challenge's CSV, in input order) from the prediction files;
    the rows' image status counts. ``scratch`` holds partitions of ``rows_per_partition``
    rows and is removed after.

    Raises:
        RuntimeError: the predictions do not hold each of the ``total`` rows exactly once
            (nothing is written).
    """
    parts = Partitions(scratch, partition_count(total, rows_per_partition))
    statuses: Counter[str] = Counter()
    seen = outside = 0
    for batch in parquet_batches(sorted(predictions.glob("*.parquet")), _COLUMNS):
        rows = batch[ROW_COLUMN].to_numpy(dtype=np.int64)
        inside = (rows >= 0) & (rows < total)
        parts.add(batch, np.where(inside, rows // rows_per_partition, -1))
        statuses.update(batch["image_status"].astype(str))
        seen, outside = seen + len(batch), outside + int((~inside).sum())
    parts.close()
    partial = submission.with_name(f".{submission.name}.tmp")
    repeated, complete = 0, outside == 0
    with open(partial, "w", newline="") as handle:
        for part in range(parts.count):
            frame = parts.read(part)
            start = part * rows_per_partition
            wanted = np.arange(start, min(total, start + rows_per_partition))
            if frame is None:
                complete = False
                continue
            frame = frame.sort_values(ROW_COLUMN, kind="stable")
            repeated += int(frame[ROW_COLUMN].duplicated().sum())
            if not np.array_equal(frame[ROW_COLUMN].to_numpy(), wanted):
                complete = False
            if complete:
                codes = frame[["prdtypecode"]].set_index(frame[INDEX_COLUMN].astype("Int64"))
                codes.rename_axis(None).to_csv(handle, header=part == 0)
    shutil.rmtree(scratch)
    if not complete:
        partial.unlink()
        raise RuntimeError(
            f"{predictions.parent}: {seen} predictions for {total} input rows ({repeated} repeated)"
        )
    partial.rename(submission)
    return dict(sorted(statuses.items()))
