"""A whole scoring run: checks, staging, one engine, then the submission and a summary.

Every input row gets exactly one output row. The run refuses to start on a missing column,
an unverifiable bundle, a non-empty output folder (unless ``overwrite`` or ``resume``), or
an image folder that is not one or where most rows find no image
(:mod:`rakuten_ray.scoring.checks`); a resumed run continues only with the bundle and input
it started with, from its staged shards, and scores only the rows without a prediction.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow.parquet as pq

from rakuten_ray.bundle import load_bundle
from rakuten_ray.catalog import SchemaError
from rakuten_ray.config import ScoringParams
from rakuten_ray.layout import INDEX_COLUMN, ROW_COLUMN, BundleLayout, ScoringLayout
from rakuten_ray.revisions import PIN_COMMAND, require_pinned
from rakuten_ray.scoring.checks import (
    ScoringRecord,
    check_image_dir,
    check_images_found,
    check_resumable,
    input_fingerprint,
)
from rakuten_ray.scoring.output import PredictionFiles
from rakuten_ray.scoring.rows import check_headers, input_files, stage_inputs

Engine = Literal["ray", "local"]
#: Rows per staged shard: one read task each in the Ray engine, one write in the local one.
ROWS_PER_SHARD = 50_000


@dataclass(frozen=True)
class ScoringSummary:
    """What a finished run did."""

    rows: int
    rows_scored_now: int
    #: Input rows staged by this run (0 when a resumed run reused its staging).
    rows_staged_now: int
    seconds: float
    engine: str
    image_status_counts: dict[str, int]

    @property
    def rows_per_second(self) -> float:
        return self.rows_scored_now / self.seconds if self.seconds else 0.0


def _prepare_out(out: Path, overwrite: bool, resume: bool) -> None:
    if out.exists() and any(out.iterdir()) and not resume:
        if not overwrite:
            raise SchemaError(
                f"{out}: output folder is not empty (use --overwrite to replace it, or --resume "
                "to finish an interrupted run)"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def done_rows(predictions: Path) -> frozenset[int]:
    """Rows already predicted; unreadable (partly written) files are removed first."""
    rows: set[int] = set()
    if not predictions.is_dir():
        return frozenset()
    for path in sorted(predictions.glob("*.parquet")):
        try:
            values = pq.read_table(path, columns=[ROW_COLUMN]).column(0).to_pylist()
        except (OSError, ValueError):  # pyarrow raises ArrowInvalid (a ValueError) on a torn file
            path.unlink()
            continue
        rows.update(values)
    return frozenset(rows)


def _score_locally(
    bundle_dir: Path,
    shards: list[Path],
    image_dir: Path,
    predictions: Path,
    scoring: ScoringParams,
    skip: frozenset[int],
) -> None:
    from rakuten_ray.scoring.local import FinalPipeline

    pipeline = FinalPipeline(bundle_dir, scoring=scoring)
    files = PredictionFiles(predictions, scoring.rows_per_output_file)
    for shard in shards:
        frame = pd.read_parquet(shard)
        frame = frame[~frame[ROW_COLUMN].isin(skip)]
        for start in range(0, len(frame), pipeline.batch_size):
            files.add(pipeline.predict(frame.iloc[start : start + pipeline.batch_size], image_dir))
    files.close()


def _finish(out: ScoringLayout, total_rows: int) -> dict[str, int]:
    """Check one prediction per row, write the submission in input order; status counts."""
    table = pd.read_parquet(
        out.predictions, columns=[ROW_COLUMN, INDEX_COLUMN, "prdtypecode", "image_status"]
    )
    duplicated = int(table[ROW_COLUMN].duplicated().sum())
    if duplicated or len(table) != total_rows:
        raise RuntimeError(
            f"{out.root}: {len(table)} predictions for {total_rows} input rows "
            f"({duplicated} repeated)"
        )
    table = table.sort_values(ROW_COLUMN)
    submission = pd.DataFrame(
        {"prdtypecode": table["prdtypecode"].to_numpy()}, index=table[INDEX_COLUMN].to_numpy()
    )
    submission.to_csv(out.submission)
    return {str(k): int(v) for k, v in table["image_status"].value_counts().sort_index().items()}


def _stage(
    files: list[Path], layout: ScoringLayout, record: ScoringRecord, rows_per_shard: int,
    created: bool,
) -> tuple[list[Path], ScoringRecord]:  # fmt: skip
    """The staged shards and the record that counts them: those of the interrupted run when
    its staging was complete, else staged now."""
    staging = layout.staging
    if record.staged_rows is not None and staging.is_dir():
        return sorted(staging.glob("shard-*.parquet")), record
    if staging.exists():
        shutil.rmtree(staging)
    try:
        total = stage_inputs(files, staging, rows_per_shard)
    except SchemaError:
        # A body the CSV parser rejects shows only while staging: leave nothing behind.
        shutil.rmtree(layout.root if created else staging, ignore_errors=True)
        raise
    record = dataclasses.replace(record, staged_rows=total)
    record.save(layout)
    return sorted(staging.glob("shard-*.parquet")), record


def run_scoring(
    bundle_dir: Path,
    source: Path,
    image_dir: Path,
    out: Path,
    engine: Engine = "ray",
    overwrite: bool = False,
    resume: bool = False,
    overrides: tuple[str, ...] = (),
    address: str | None = None,
    rows_per_shard: int = ROWS_PER_SHARD,
    allow_missing_images: bool = False,
    refuse_unpinned: bool = False,
) -> ScoringSummary:
    """Score every row of ``source`` (a CSV or Parquet file, or a folder of them).

    ``rows_per_shard`` sets the staged shard size. With ``resume``, an interrupted run in
    ``out`` continues with the rows that have no prediction yet, from its staged shards. With
    ``refuse_unpinned``, a bundle trained from a hub model not pinned to a commit is refused.

    Raises:
        SchemaError: a missing column, no input, a non-empty ``out``, an image folder that is
            not one, or one where most rows find no image (unless ``allow_missing_images``);
            on resume, another bundle or input than the interrupted run's. All before any
            model loads.
        BundleError: the bundle does not match its manifest.
        UnpinnedModelsError: see ``refuse_unpinned``, before any model loads.
    """
    files = input_files(source)
    check_headers(files)
    # Every file is hashed here, before any work; each stage then hashes only what it loads.
    bundle = load_bundle(bundle_dir)
    if refuse_unpinned:
        remedy = (
            f"the bundle was trained from them: retrain it from a config pinned by "
            f"`{PIN_COMMAND}`, or pass --allow-unpinned to score with it as it is"
        )
        require_pinned(bundle.config, str(bundle.path(BundleLayout.CONFIG)), remedy)
    scoring = bundle.scoring(overrides)
    check_image_dir(Path(image_dir), needed=bool(bundle.fusion.image_models))
    layout = ScoringLayout(out)
    record = ScoringRecord(bundle.bundle_id, input_fingerprint(files))
    if resume and out.exists():
        record = check_resumable(layout, record) or record
    created = not out.exists()
    _prepare_out(out, overwrite, resume)
    started = time.perf_counter()
    record.save(layout)
    staged_before = record.staged_rows is not None
    shards, record = _stage(files, layout, record, rows_per_shard, created)
    total = record.staged_rows
    assert total is not None, "staging counts the rows"
    if bundle.fusion.image_models and not allow_missing_images:
        try:
            check_images_found(shards, total, Path(image_dir), scoring.max_missing_image_share)
        except SchemaError:
            if created:
                shutil.rmtree(out, ignore_errors=True)
            raise
    predictions = layout.predictions
    predictions.mkdir(exist_ok=True)
    skip = done_rows(predictions) if resume else frozenset()
    if len(skip) < total:
        if engine == "local":
            _score_locally(Path(bundle_dir), shards, image_dir, predictions, scoring, skip)
        else:
            from rakuten_ray.ray_session import ensure_ray
            from rakuten_ray.scoring.ray_pipeline import score_with_ray

            ensure_ray(address)
            score_with_ray(Path(bundle_dir), shards, image_dir, predictions, scoring, skip)
    counts = _finish(layout, total)
    shutil.rmtree(layout.staging)
    summary = ScoringSummary(
        rows=total,
        rows_scored_now=total - len(skip),
        rows_staged_now=0 if staged_before else total,
        seconds=time.perf_counter() - started,
        engine=engine,
        image_status_counts=counts,
    )
    layout.summary.write_text(
        json.dumps({**summary.__dict__, "rows_per_second": summary.rows_per_second}, indent=1)
    )
    return summary
