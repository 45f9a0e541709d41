"""A whole scoring run, in named phases: check the inputs, record the run (or check the
interrupted one's record), stage the input, check the images, score with one engine, finish
with the submission; then a summary with each phase's time.

Every input row gets exactly one output row. The run refuses to start on a missing column,
an unverifiable bundle, a non-empty output folder (unless ``overwrite`` or ``resume``), or
an image folder that is not one or where most rows find no image
(:mod:`rakuten_ray.scoring.checks`); a resumed run continues only with the bundle, input,
image folder and result settings it started with, from its staged shards, and scores only
the rows without a prediction.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow.parquet as pq
from pyarrow.fs import FileType

from rakuten_ray import storage
from rakuten_ray.bundle import Bundle, load_bundle
from rakuten_ray.catalog import SchemaError
from rakuten_ray.config import ScoringParams
from rakuten_ray.layout import INDEX_COLUMN, ROW_COLUMN, BundleLayout, ScoringLayout
from rakuten_ray.lifecycle import PhaseClock, RunRecord
from rakuten_ray.revisions import PIN_COMMAND, require_pinned
from rakuten_ray.scoring.checks import (
    check_image_dir,
    check_images_found,
    check_resumable,
    scoring_record,
)
from rakuten_ray.scoring.output import PredictionFiles
from rakuten_ray.scoring.rows import check_headers, input_files, stage_inputs
from rakuten_ray.storage import Location

Engine = Literal["ray", "local"]
Log = Callable[[str], None]
#: Rows per staged shard: one read task each in the Ray engine, one write in the local one.
ROWS_PER_SHARD = 50_000
#: The run record's progress entry written once staging is complete: the rows staged.
STAGED_ROWS = "staged_rows"


@dataclass(frozen=True)
class ScoringSummary:
    """What a finished run did."""

    rows: int
    rows_scored_now: int
    #: Input rows staged by this run (0 when a resumed run reused its staging).
    rows_staged_now: int
    #: From staging to the submission (the checks before staging are in ``phase_seconds``).
    seconds: float
    engine: str
    image_status_counts: dict[str, int]
    #: Seconds of each named phase, as :class:`~rakuten_ray.lifecycle.PhaseClock` timed them.
    phase_seconds: dict[str, float]

    @property
    def rows_per_second(self) -> float:
        return self.rows_scored_now / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class ScoringInputs:
    """A run's checked inputs: the input files, the hashed bundle, its scoring settings (with
    the command line's overrides) and the image folder."""

    files: list[str]
    bundle: Bundle
    scoring: ScoringParams
    #: The image folder; ``None`` when the input carries its images (``image_column``).
    image_dir: Location | None
    #: The input's image column (:data:`~rakuten_ray.catalog.IMAGE_COLUMNS`), if any.
    image_column: str | None
    #: The bundle as the stages open it: a URI stays one, so that each node copies it.
    bundle_source: str


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
    bundle_dir: str,
    shards: list[Path],
    image_dir: Location | None,
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


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


def check_inputs(
    bundle_dir: Location,
    source: Location,
    image_dir: Location | None,
    overrides: tuple[str, ...],
    refuse_unpinned: bool,
) -> ScoringInputs:
    """The input files with their headers checked, the bundle with every file hashed (and,
    with ``refuse_unpinned``, trained from pinned hub models only), its scoring settings and
    the image folder, checked to be one where the bundle needs images."""
    files = input_files(source)
    image_column = check_headers(files)
    # Every file is hashed here, before any work; each stage then hashes only what it loads.
    bundle = load_bundle(bundle_dir)
    if refuse_unpinned:
        remedy = (
            f"the bundle was trained from them: retrain it from a config pinned by "
            f"`{PIN_COMMAND}`, or pass --allow-unpinned to score with it as it is"
        )
        require_pinned(bundle.config, str(bundle.path(BundleLayout.CONFIG)), remedy)
    needed = bool(bundle.fusion.image_models) and image_column is None
    if needed and image_dir is None:
        raise SchemaError(
            f"{source}: --images is required: the bundle has image models and the input "
            "carries no image or image_uri column"
        )
    if image_column is not None:
        image_dir = None  # each row names its own image
    check_image_dir(image_dir, needed)
    source_of_bundle = str(bundle_dir) if storage.is_remote(bundle_dir) else str(bundle.root)
    return ScoringInputs(
        files, bundle, bundle.scoring(overrides), image_dir, image_column, source_of_bundle
    )


def open_run(
    inputs: ScoringInputs, layout: ScoringLayout, overwrite: bool, resume: bool
) -> tuple[RunRecord, bool]:
    """The run's record, written into its output folder once that is ready: the interrupted
    run's (with its progress) when resuming one of the same inputs and settings. Also
    whether this run created the folder."""
    record = scoring_record(inputs.bundle.bundle_id, inputs.files, inputs.image_dir, inputs.scoring)
    if resume and layout.root.exists():
        record = check_resumable(layout, record) or record
    created = not layout.root.exists()
    _prepare_out(layout.root, overwrite, resume)
    record.save(layout.record)
    return record, created


@contextmanager
def _removed_on_refusal(path: Path | None) -> Iterator[None]:
    """Remove ``path`` (if any) when the body refuses the input, so that a refused run leaves
    nothing behind."""
    try:
        yield
    except SchemaError:
        if path is not None:
            shutil.rmtree(path, ignore_errors=True)
        raise


def stage(
    inputs: ScoringInputs, layout: ScoringLayout, record: RunRecord, rows_per_shard: int,
    created: bool,
) -> tuple[list[Path], RunRecord, int]:  # fmt: skip
    """The staged shards, the record that counts their rows and the rows staged now: the
    interrupted run's shards when its staging was complete, else staged now."""
    staging = layout.staging
    if STAGED_ROWS in record.progress and staging.is_dir():
        return sorted(staging.glob("shard-*.parquet")), record, 0
    if staging.exists():
        shutil.rmtree(staging)
    # A body the CSV parser rejects shows only while staging.
    with _removed_on_refusal(layout.root if created else staging):
        total = stage_inputs(inputs.files, staging, rows_per_shard)
    record = record.with_progress(**{STAGED_ROWS: total})
    record.save(layout.record)
    return sorted(staging.glob("shard-*.parquet")), record, total


def check_images(
    inputs: ScoringInputs, shards: list[Path], total: int, layout: ScoringLayout, created: bool,
    allow_missing_images: bool,
) -> None:  # fmt: skip
    """Refuse a run where most rows find no image, unless the bundle has no image model or
    ``allow_missing_images``."""
    if not inputs.bundle.fusion.image_models or allow_missing_images or inputs.image_dir is None:
        return
    share = inputs.scoring.max_missing_image_share
    with _removed_on_refusal(layout.root if created else None):
        check_images_found(shards, total, inputs.image_dir, share)


def score(
    inputs: ScoringInputs, shards: list[Path], total: int, layout: ScoringLayout,
    engine: Engine, address: str | None, resume: bool,
) -> int:  # fmt: skip
    """Score every staged row without a prediction yet with ``engine``; the rows scored."""
    predictions = layout.predictions
    predictions.mkdir(exist_ok=True)
    skip = done_rows(predictions) if resume else frozenset()
    if len(skip) == total:
        return 0
    bundle_dir, image_dir, scoring = inputs.bundle_source, inputs.image_dir, inputs.scoring
    if engine == "local":
        _score_locally(bundle_dir, shards, image_dir, predictions, scoring, skip)
    else:
        from rakuten_ray.ray_session import ensure_ray
        from rakuten_ray.scoring.ray_pipeline import score_with_ray

        ensure_ray(address)
        score_with_ray(bundle_dir, shards, image_dir, predictions, scoring, skip)
    return total - len(skip)


def finish(layout: ScoringLayout, total: int) -> dict[str, int]:
    """Check one prediction per row, write the submission in input order, remove the staged
    shards; the rows' image status counts."""
    table = pd.read_parquet(
        layout.predictions, columns=[ROW_COLUMN, INDEX_COLUMN, "prdtypecode", "image_status"]
    )
    duplicated = int(table[ROW_COLUMN].duplicated().sum())
    if duplicated or len(table) != total:
        raise RuntimeError(
            f"{layout.root}: {len(table)} predictions for {total} input rows "
            f"({duplicated} repeated)"
        )
    table = table.sort_values(ROW_COLUMN)
    submission = pd.DataFrame(
        {"prdtypecode": table["prdtypecode"].to_numpy()}, index=table[INDEX_COLUMN].to_numpy()
    )
    submission.to_csv(layout.submission)
    shutil.rmtree(layout.staging)
    return {str(k): int(v) for k, v in table["image_status"].value_counts().sort_index().items()}


def _work_folder(out: str, overwrite: bool, resume: bool) -> Path:
    """The local folder where a run for an object-storage ``out`` works before publishing:
    one per ``out`` in this node's cache, kept for ``resume``. Refuses a non-empty ``out``
    unless ``overwrite`` or ``resume``, before any work."""
    storage.check_bucket(out)
    found = storage.check_reachable(out, must_exist=False, what="output folder")
    # An object store has no empty folders: a prefix is "there" only while it holds objects.
    if found.type != FileType.NotFound and not (overwrite or resume):
        raise SchemaError(
            f"{out}: output folder is not empty (use --overwrite to replace it, or --resume "
            "to finish an interrupted run)"
        )
    folder = storage.cache_dir("runs") / hashlib.sha256(out.encode()).hexdigest()[:16]
    if not resume:
        shutil.rmtree(folder, ignore_errors=True)
    return folder


def publish(layout: ScoringLayout, out: str) -> None:
    """Copy a finished run's folder to ``out``, ``summary.json`` last: a crashed upload
    leaves no summary, so nothing reads as complete; then drop the local copy."""
    storage.delete_contents(out)
    files = sorted(p for p in layout.root.rglob("*") if p.is_file() and p != layout.summary)
    for path in [*files, layout.summary]:
        storage.upload(path, storage.join(out, *path.relative_to(layout.root).parts))
    shutil.rmtree(layout.root)


def run_scoring(
    bundle_dir: Location,
    source: Location,
    image_dir: Location | None,
    out: Location,
    engine: Engine = "ray",
    overwrite: bool = False,
    resume: bool = False,
    overrides: tuple[str, ...] = (),
    address: str | None = None,
    rows_per_shard: int = ROWS_PER_SHARD,
    allow_missing_images: bool = False,
    refuse_unpinned: bool = False,
    log: Log = print,
) -> ScoringSummary:
    """Score every row of ``source`` (a CSV or Parquet file, or a folder of them), in named
    phases: check inputs, run record, stage, check images, score, finish.

    Every location may be a local path or an object-storage URI (:mod:`rakuten_ray.storage`).
    A run for a URI ``out`` works in a local folder of this node's cache and publishes it
    when finished, ``summary.json`` last (:func:`publish`).

    ``rows_per_shard`` sets the staged shard size. With ``resume``, an interrupted run in
    ``out`` continues with the rows that have no prediction yet, from its staged shards. With
    ``refuse_unpinned``, a bundle trained from a hub model not pinned to a commit is refused.

    Raises:
        StorageError: a location whose store refuses or cannot be reached, or a missing
            bucket or key; before any work.
        SchemaError: a missing column, no input, a non-empty ``out``, an image folder that is
            not one, or one where most rows find no image (unless ``allow_missing_images``).
            All before any model loads.
        ResumeError: on resume, another bundle, input or image folder than the interrupted
            run's, or other settings that change results; before any work.
        BundleError: the bundle does not match its manifest.
        UnpinnedModelsError: see ``refuse_unpinned``, before any model loads.
    """
    clock = PhaseClock(log, label="phase ")
    remote = storage.is_remote(out)
    with clock.phase("check inputs"):
        local = _work_folder(str(out), overwrite, resume) if remote else Path(out)
        layout = ScoringLayout(local)
        inputs = check_inputs(bundle_dir, source, image_dir, overrides, refuse_unpinned)
    with clock.phase("run record"):
        record, created = open_run(inputs, layout, overwrite, resume)
    with clock.phase("stage"):
        shards, record, staged_now = stage(inputs, layout, record, rows_per_shard, created)
    total = int(record.progress[STAGED_ROWS])
    with clock.phase("check images"):
        check_images(inputs, shards, total, layout, created, allow_missing_images)
    with clock.phase("score"):
        scored_now = score(inputs, shards, total, layout, engine, address, resume)
    with clock.phase("finish"):
        counts = finish(layout, total)
    summary = ScoringSummary(
        rows=total,
        rows_scored_now=scored_now,
        rows_staged_now=staged_now,
        seconds=clock.since("stage"),
        engine=engine,
        image_status_counts=counts,
        phase_seconds=dict(clock.seconds),
    )
    layout.summary.write_text(
        json.dumps({**asdict(summary), "rows_per_second": summary.rows_per_second}, indent=1)
    )
    if remote:
        publish(layout, str(out))
    return summary
