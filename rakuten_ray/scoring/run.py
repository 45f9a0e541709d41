"""A whole scoring run, in named phases: check the inputs, record the run (or check the
interrupted one's record), stage the input, check the images, score with one engine, finish
with the submission; then a summary with each phase's time.

Every input row gets exactly one output row. The run refuses to start on a missing column,
an unverifiable bundle, a non-empty output folder (unless ``overwrite`` or ``resume``), or
an image folder that is not one or where most rows find no image
(:mod:`rakuten_ray.scoring.checks`); a resumed run continues only with the bundle, input,
image folder and result settings it started with, from its staged shards, and scores only
the rows without a prediction. With a ``previous`` output, the rows it scored with the same
bundle and unchanged content are carried over first (:mod:`rakuten_ray.scoring.incremental`).

The driver holds no per-row state beyond one bit a row: staging reads the input a shard at a
time, the rows to skip are a bitmap (:mod:`rakuten_ray.scoring.rowset`) and the submission is
written from partitions on disk (:mod:`rakuten_ray.scoring.submission`).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from rakuten_ray import storage
from rakuten_ray.bundle import Bundle, load_bundle
from rakuten_ray.catalog import SchemaError
from rakuten_ray.config import ScoringParams
from rakuten_ray.layout import ROW_COLUMN, BundleLayout, ScoringLayout
from rakuten_ray.lifecycle import PhaseClock, RunRecord
from rakuten_ray.revisions import PIN_COMMAND, require_pinned
from rakuten_ray.scoring.checks import (
    check_image_dir,
    check_images_found,
    check_resumable,
    scoring_record,
)
from rakuten_ray.scoring.incremental import Previous, carry_over, open_previous, write_changes
from rakuten_ray.scoring.output import PredictionFiles
from rakuten_ray.scoring.progress import RowProgress
from rakuten_ray.scoring.rows import check_headers, input_files, stage_inputs
from rakuten_ray.scoring.rowset import RowSet, done_rows
from rakuten_ray.scoring.submission import write_submission
from rakuten_ray.storage import Location

Engine = Literal["ray", "local"]
Log = Callable[[str], None]
#: Rows per staged shard: one read task each in the Ray engine, one write in the local one.
ROWS_PER_SHARD = 50_000
#: The run record's progress entry written once staging is complete: the rows staged.
STAGED_ROWS = "staged_rows"
#: The run record's progress entry written once rows are carried over: how many.
CARRIED_ROWS = "carried_rows"


@dataclass(frozen=True)
class ScoringSummary:
    """What a finished run did."""

    rows: int
    rows_scored_now: int
    #: Rows whose prediction came from the ``--previous`` output (0 without one).
    rows_carried_over: int
    #: Input rows staged by this run (0 when a resumed run reused its staging).
    rows_staged_now: int
    #: From staging to the submission (the checks before staging are in ``phase_seconds``).
    seconds: float
    engine: str
    image_status_counts: dict[str, int]
    #: Seconds of each named phase, as :class:`~rakuten_ray.lifecycle.PhaseClock` timed them.
    phase_seconds: dict[str, float]
    #: The ``--previous`` output, why it carried nothing over (if so) and the rows in
    #: ``changes.parquet``; None without one.
    previous: dict[str, object] | None = None

    @property
    def rows_per_second(self) -> float:
        return self.rows_scored_now / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class ScoringInputs:
    """A run's checked inputs: the input files, the hashed bundle, its scoring settings (with
    the command line's overrides), the image folder and the ``--previous`` output."""

    files: list[str]
    bundle: Bundle
    scoring: ScoringParams
    #: The image folder; ``None`` when the input carries its images (``image_column``).
    image_dir: Location | None
    #: The input's image column (:data:`~rakuten_ray.catalog.IMAGE_COLUMNS`), if any.
    image_column: str | None
    #: The bundle as the stages open it: a URI stays one, so that each node copies it.
    bundle_source: str
    previous: Previous | None = None


def _prepare_out(out: Path, overwrite: bool, resume: bool) -> None:
    if out.exists() and any(out.iterdir()) and not resume:
        if not overwrite:
            raise SchemaError(
                f"{out}: output folder is not empty (use --overwrite to replace it, or --resume "
                "to finish an interrupted run)"
            )
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _score_locally(
    bundle_dir: str,
    shards: list[Path],
    image_dir: Location | None,
    predictions: Path,
    scoring: ScoringParams,
    skip: RowSet,
    log: Log,
) -> None:
    from rakuten_ray.scoring.local import FinalPipeline

    pipeline = FinalPipeline(bundle_dir, scoring=scoring)

    def batches() -> Iterator[pd.DataFrame]:
        for shard in shards:
            frame = pd.read_parquet(shard)
            frame = frame[~skip.contains(frame[ROW_COLUMN].to_numpy())]
            for start in range(0, len(frame), pipeline.batch_size):
                yield frame.iloc[start : start + pipeline.batch_size]

    files = PredictionFiles(predictions, scoring.rows_per_output_file)
    progress = RowProgress(skip.total - len(skip), log)
    for scored in pipeline.predict_batches(batches(), image_dir):
        files.add(scored)
        progress.update(len(scored))
    files.close()
    progress.close()


# --------------------------------------------------------------------------------------------
# Phases
# --------------------------------------------------------------------------------------------


def check_inputs(
    bundle_dir: Location,
    source: Location,
    image_dir: Location | None,
    overrides: tuple[str, ...],
    refuse_unpinned: bool,
    previous: Path | None,
    out: Path,
) -> ScoringInputs:
    """The input files with their headers checked, the bundle with every file hashed (and,
    with ``refuse_unpinned``, trained from pinned hub models only), its scoring settings,
    the image folder, checked to be one where the bundle needs images, and the ``previous``
    output (another folder than ``out``), checked to be a scoring output."""
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
    before = None if previous is None else open_previous(previous, out)
    return ScoringInputs(
        files, bundle, bundle.scoring(overrides), image_dir, image_column, source_of_bundle,
        before,
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
    # Image bytes go into a row's digest only when they go into its prediction.
    images = bool(inputs.bundle.fusion.image_models)
    with _removed_on_refusal(layout.root if created else staging):
        total = stage_inputs(inputs.files, staging, rows_per_shard, inputs.image_dir, images)
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


def carry(
    inputs: ScoringInputs, previous: Previous, shards: list[Path], layout: ScoringLayout,
    record: RunRecord, log: Log,
) -> tuple[RunRecord, dict[str, object]]:  # fmt: skip
    """Carry the ``previous`` output's rows over (once: a resumed run keeps what it
    carried); the record with the rows carried, and what the summary says of it."""
    refusal = previous.carry_refusal(record)
    if CARRIED_ROWS not in record.progress:
        for partial in layout.predictions.glob("carried-*.parquet"):
            partial.unlink()  # from a run interrupted while carrying rows over
        carried = 0
        if refusal is None:
            layout.predictions.mkdir(exist_ok=True)
            carried = carry_over(
                previous, shards, inputs.bundle.bundle_id, layout.predictions,
                layout.scratch, inputs.scoring.rows_per_output_file,
            )  # fmt: skip
        record = record.with_progress(**{CARRIED_ROWS: carried})
        record.save(layout.record)
    carried = int(record.progress[CARRIED_ROWS])
    if refusal is not None:
        log(f"--previous {previous.root}: nothing carried over: {refusal}")
    else:
        log(f"--previous {previous.root}: {carried} rows carried over")
    return record, {"path": str(previous.root), "carried_nothing_because": refusal}


def score(
    inputs: ScoringInputs, shards: list[Path], total: int, layout: ScoringLayout,
    engine: Engine, address: str | None, log: Log,
) -> int:  # fmt: skip
    """Score every staged row without a prediction yet (an interrupted run's, or one carried
    over) with ``engine``; the rows scored."""
    predictions = layout.predictions
    predictions.mkdir(exist_ok=True)
    skip = done_rows(predictions, total)
    if len(skip) == total:
        return 0
    bundle_dir, image_dir, scoring = inputs.bundle_source, inputs.image_dir, inputs.scoring
    if engine == "local":
        _score_locally(bundle_dir, shards, image_dir, predictions, scoring, skip, log)
    else:
        from rakuten_ray.ray_session import ensure_ray
        from rakuten_ray.scoring.ray_pipeline import score_with_ray

        ensure_ray(address)
        score_with_ray(bundle_dir, shards, image_dir, predictions, scoring, skip)
    return total - len(skip)


def finish(
    inputs: ScoringInputs, layout: ScoringLayout, total: int
) -> tuple[dict[str, int], int | None]:
    """Check one prediction per row, write the submission in input order and, with a
    ``--previous`` output, the changes; remove the staged shards. The rows' image status
    counts and the rows in ``changes.parquet`` (None without one)."""
    counts = write_submission(layout.predictions, total, layout.submission, layout.scratch)
    changed = None
    if inputs.previous is not None:
        changed = write_changes(inputs.previous, layout.predictions, layout.changes, layout.scratch)
    shutil.rmtree(layout.staging)
    return counts, changed


def _local_previous(previous: Location, out: Location) -> Path:
    """A ``--previous`` output as a local folder: an object-storage one is copied into this
    node's cache first."""
    if not storage.is_remote(previous):
        return Path(previous)
    if str(previous).rstrip("/") == str(out).rstrip("/"):
        raise SchemaError(f"{previous}: --previous must be another folder than --out")
    return storage.fetched(previous, "--previous output")


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
    previous: Location | None = None,
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
    With ``previous`` (an earlier run's output folder), its rows of the same content and
    bundle are carried over rather than scored, and ``changes.parquet`` lists the rows
    whose code moved.

    Raises:
        StorageError: a location whose store refuses or cannot be reached, or a missing
            bucket or key; before any work.
        SchemaError: a missing column, no input, a non-empty ``out``, an image folder that is
            not one, or one where most rows find no image (unless ``allow_missing_images``).
            A ``previous`` that is not a scoring output, or is ``out``. All before any
            model loads.
        ResumeError: on resume, another bundle, input or image folder than the interrupted
            run's, or other settings that change results; before any work.
        BundleError: the bundle does not match its manifest.
        UnpinnedModelsError: see ``refuse_unpinned``, before any model loads.
    """
    clock = PhaseClock(log, label="phase ")
    with clock.phase("check inputs"):
        # A run for an object-storage --out works in a local folder, kept for --resume.
        layout = ScoringLayout(storage.work_folder(out, "runs", overwrite, keep=resume))
        before = None if previous is None else _local_previous(previous, out)
        inputs = check_inputs(
            bundle_dir, source, image_dir, overrides, refuse_unpinned, before, layout.root
        )
    with clock.phase("run record"):
        record, created = open_run(inputs, layout, overwrite, resume)
    with clock.phase("stage"):
        shards, record, staged_now = stage(inputs, layout, record, rows_per_shard, created)
    total = int(record.progress[STAGED_ROWS])
    with clock.phase("check images"):
        check_images(inputs, shards, total, layout, created, allow_missing_images)
    carried = None
    if inputs.previous is not None:
        with clock.phase("carry over"):
            record, carried = carry(inputs, inputs.previous, shards, layout, record, log)
    with clock.phase("score"):
        scored_now = score(inputs, shards, total, layout, engine, address, log)
    with clock.phase("finish"):
        counts, changed = finish(inputs, layout, total)
    summary = ScoringSummary(
        rows=total,
        rows_scored_now=scored_now,
        rows_carried_over=int(record.progress.get(CARRIED_ROWS, 0)),
        rows_staged_now=staged_now,
        seconds=clock.since("stage"),
        engine=engine,
        image_status_counts=counts,
        phase_seconds=dict(clock.seconds),
        previous=None if carried is None else {**carried, "rows_changed": changed},
    )
    layout.summary.write_text(
        json.dumps({**asdict(summary), "rows_per_second": summary.rows_per_second}, indent=1)
    )
    # summary.json last: a crashed upload leaves no summary, so nothing reads as complete.
    storage.publish(layout.root, out, last=(layout.summary.name,))
    return summary
