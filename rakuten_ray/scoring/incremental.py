"""Incremental rescoring (``rakuten-ray score --previous OLD_OUT``).

A staged row whose content digest (texts, ids and image bytes, taken at staging) matches a
row of the previous output scored by the same bundle, with the same result settings, gets
that row's prediction under its own ``row`` and ``index``: scoring is deterministic, so it
is the prediction a rescore would give, without the model work. Every other row is scored.
A previous output from another bundle, or with other result settings, carries nothing over
and the run says why.

After the run, ``OUT/changes.parquet`` lists the rows whose final code differs from the
previous output's for the same ``productid``. Both matches go through partitions on disk
(:mod:`rakuten_ray.scoring.partitions`), so the driver never holds either output whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rakuten_ray.catalog import SchemaError
from rakuten_ray.layout import (
    BUNDLE_ID_COLUMN,
    CONTENT_HASH_COLUMN,
    INDEX_COLUMN,
    PREDICTION_DTYPES,
    ROW_COLUMN,
    ScoringLayout,
)
from rakuten_ray.lifecycle import ResumeError, RunRecord, settings_differences
from rakuten_ray.scoring.checks import BUNDLE_INPUT
from rakuten_ray.scoring.output import PredictionFiles
from rakuten_ray.scoring.partitions import (
    parquet_batches,
    partition_count,
    partition_pairs,
    string_nulls,
)
from rakuten_ray.scoring.rows import as_id

#: The columns of ``changes.parquet``, with their types.
CHANGE_DTYPES: dict[str, str] = {
    ROW_COLUMN: "int64", INDEX_COLUMN: "Int64", "productid": "Int64", "imageid": "Int64",
    "previous_prdtypecode": "int64", "prdtypecode": "int64", "confidence": "float64",
    "decision": "object",
}  # fmt: skip
_NEEDED = ("productid", "prdtypecode")


@dataclass(frozen=True)
class Previous:
    """A previous scoring output, checked before any work."""

    root: Path
    files: list[Path]
    rows: int
    #: What the previous run scored with; None for a folder without a run record.
    record: RunRecord | None
    #: Whether its rows carry their content digest and bundle id.
    has_digests: bool

    def carry_refusal(self, record: RunRecord) -> str | None:
        """Why no row of this output can be carried into run ``record``; None if rows can."""
        if not self.has_digests or self.record is None:
            return "its rows carry no content digest and bundle id (an older output)"
        then, now = self.record.inputs.get(BUNDLE_INPUT), record.inputs[BUNDLE_INPUT]
        if then != now:
            return f"it was scored by bundle {then}, this run's is {now}"
        differences = settings_differences(self.record.settings, record.settings)
        if differences:
            return f"it was scored with other result settings: {'; '.join(differences)}"
        return None


def open_previous(path: Path, out: Path) -> Previous:
    """The scoring output at ``path``.

    Raises:
        SchemaError: ``path`` is ``out``, or not a scoring output with predictions.
    """
    if path.resolve() == out.resolve():
        raise SchemaError(f"{path}: --previous must be another folder than --out")
    layout = ScoringLayout(path)
    files = sorted(layout.parquet_dir().glob("*.parquet")) if path.is_dir() else []
    if not files:
        raise SchemaError(f"{path}: --previous is not a scoring output (no prediction files)")
    try:
        schemas = [pq.ParquetFile(f).schema_arrow for f in files]
        record = RunRecord.load(layout.record)
    except (OSError, pa.ArrowException, ResumeError) as exc:
        raise SchemaError(f"{path}: --previous is not a readable scoring output ({exc})") from exc
    missing = sorted({c for s in schemas for c in _NEEDED if c not in s.names})
    if missing:
        raise SchemaError(f"{path}: --previous predictions lack column(s) {missing}")
    has_digests = all(
        {CONTENT_HASH_COLUMN, BUNDLE_ID_COLUMN} <= set(schema.names) for schema in schemas
    )
    rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    return Previous(path, files, rows, record, has_digests)


def _rows(files: list[Path]) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files)


def carry_over(
    previous: Previous, shards: list[Path], bundle_id: str, predictions: Path, scratch: Path,
    rows_per_file: int,
) -> int:  # fmt: skip
    """Write into ``predictions`` the previous prediction of every staged row whose digest
    matches one of ``previous`` scored by ``bundle_id``; the rows carried over."""
    staged = parquet_batches(shards, [ROW_COLUMN, INDEX_COLUMN, CONTENT_HASH_COLUMN])
    scored = (
        batch[batch[BUNDLE_ID_COLUMN] == bundle_id].drop(columns=[ROW_COLUMN, INDEX_COLUMN])
        for batch in parquet_batches(previous.files, list(PREDICTION_DTYPES))
    )
    count = partition_count(max(previous.rows, _rows(shards)))
    files = PredictionFiles(predictions, rows_per_file, prefix="carried")
    carried = 0
    for now, before in partition_pairs(staged, scored, CONTENT_HASH_COLUMN, count, scratch):
        # Equal digests, equal rows: any one of them gives the prediction.
        matched = now.merge(before.drop_duplicates(CONTENT_HASH_COLUMN), on=CONTENT_HASH_COLUMN)
        matched[INDEX_COLUMN] = as_id(matched[INDEX_COLUMN])
        files.add(matched.sort_values(ROW_COLUMN))
        carried += len(matched)
    files.close()
    return carried


def write_changes(previous: Previous, predictions: Path, changes: Path, scratch: Path) -> int:
    """Write ``changes`` (:data:`CHANGE_DTYPES`, by ``row`` within each partition): the rows
    whose ``prdtypecode`` differs from the previous output's row of the same ``productid``
    (its last, if it had several); the rows written."""
    files = sorted(predictions.glob("*.parquet"))
    current = parquet_batches(files, [c for c in CHANGE_DTYPES if c != "previous_prdtypecode"])
    earlier = (
        batch.rename(columns={"prdtypecode": "previous_prdtypecode"})
        for batch in parquet_batches(previous.files, list(_NEEDED))
    )
    count = partition_count(max(previous.rows, _rows(files)))
    empty = pd.DataFrame({c: pd.Series(dtype=t) for c, t in CHANGE_DTYPES.items()})
    schema = string_nulls(pa.Schema.from_pandas(empty, preserve_index=False))
    partial = changes.with_name(f".{changes.name}.tmp")
    rows = 0
    with pq.ParquetWriter(partial, schema) as writer:
        for now, before in partition_pairs(current, earlier, "productid", count, scratch):
            merged = now.merge(before.drop_duplicates("productid", keep="last"), on="productid")
            moved = merged[merged["prdtypecode"] != merged["previous_prdtypecode"]]
            moved = moved[list(CHANGE_DTYPES)].astype(CHANGE_DTYPES).sort_values(ROW_COLUMN)
            writer.write_table(pa.Table.from_pandas(moved, schema=schema, preserve_index=False))
            rows += len(moved)
    partial.rename(changes)
    return rows
