"""Synthetic demo catalogue in the challenge's raw layout.

The demo cannot ship the real Rakuten data, so this module writes a stand-in with the same
files, columns, id ranges, class imbalance and defects (empty descriptions, HTML fragments,
missing and unreadable images). Text (:mod:`rakuten_ray.synthetic_text`) carries a strong but
imperfect class signal; images (:mod:`rakuten_ray.synthetic_images`) carry a weaker, partly
ambiguous one, so that text beats image and fusion can beat both.

Every random choice comes from a stream derived from ``seed`` and, for images, the row number,
so the same arguments give byte-identical files however many worker processes draw the images.
"""

from __future__ import annotations

import io
import math
import multiprocessing
import os
import random
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image

from rakuten_ray.catalog import (
    CLASS_CODES,
    IMAGE_SUBDIRS,
    LABEL_COLUMN,
    X_COLUMNS,
    X_TEST_FILE,
    X_TRAIN_FILE,
    Y_TRAIN_FILE,
    image_filename,
)
from rakuten_ray.synthetic_images import render_image
from rakuten_ray.synthetic_text import listing_texts

#: Labels of the test rows; the real challenge keeps them secret, the demo does not.
Y_TEST_FILE = "Y_test_labels.csv"

#: Share of each class in per cent, as in the real training set.
CLASS_SHARES: dict[int, float] = {
    10: 3.67, 40: 2.95, 50: 1.98, 60: 0.98, 1140: 3.15, 1160: 4.66, 1180: 0.90, 1280: 5.74,
    1281: 2.44, 1300: 5.94, 1301: 0.95, 1302: 2.93, 1320: 3.82, 1560: 5.97, 1920: 5.07,
    1940: 0.95, 2060: 5.88, 2220: 0.97, 2280: 5.61, 2403: 5.62, 2462: 1.67, 2522: 5.88,
    2582: 3.05, 2583: 12.02, 2585: 2.94, 2705: 3.25, 2905: 1.03,
}  # fmt: skip

JPEG_QUALITY = 85
MISSING_IMAGE_RATE = 0.02
UNREADABLE_IMAGE_RATE = 0.003

_PRODUCTID_RANGE = (10_000, 4_300_000_000)
_IMAGEID_RANGE = (1_000_000_000, 1_330_000_000)
# Stream keys keep the label, id, text and image draws independent of each other, so adding
# rows or skipping images never changes the other streams.
_STREAM_LABELS, _STREAM_IDS, _STREAM_DEFECTS, _STREAM_TEXT, _STREAM_IMAGE = range(5)


@dataclass(frozen=True)
class CatalogueSummary:
    """What :func:`generate_catalogue` wrote.

    Attributes:
        root: the catalogue folder.
        csv_files: X/Y files of the train and test splits.
        image_dirs: image folders (empty when images were skipped).
        train_rows: rows in the training files.
        test_rows: rows in the test files.
        missing_images: rows, over both splits, whose image file does not exist.
        unreadable_images: rows, over both splits, whose image file exists but is not a JPEG.
        elapsed_s: wall-clock seconds spent.
    """

    root: Path
    csv_files: tuple[Path, ...]
    image_dirs: tuple[Path, ...]
    train_rows: int
    test_rows: int
    missing_images: int
    unreadable_images: int
    elapsed_s: float


def _make_texts(seed: int, split: int, codes: np.ndarray) -> tuple[list[str], list[str]]:
    """Titles and descriptions of one split.

    Text is drawn serially with the standard library generator: scalar draws are several times
    cheaper than numpy's, and a row needs dozens of them.
    """
    state = np.random.SeedSequence([seed, split, _STREAM_TEXT]).generate_state(1)
    return listing_texts(random.Random(int(state[0])), codes.tolist())


# --------------------------------------------------------------------------------------------
# Labels, ids and defects
# --------------------------------------------------------------------------------------------


def allocate_counts(rows: int) -> dict[int, int]:
    """Rows per class by largest remainder, at least one per class when ``rows >= 27``.

    Args:
        rows: total number of rows.

    Returns:
        Class code -> row count, summing to ``rows``.
    """
    codes = np.asarray(CLASS_CODES)
    shares = np.array([CLASS_SHARES[c] for c in CLASS_CODES])
    quota = shares / shares.sum() * rows
    counts = np.floor(quota).astype(np.int64)
    # Stable sort: ties in the remainder go to the lower code, so the result is reproducible.
    by_remainder = np.argsort(-(quota - counts), kind="stable")
    counts[by_remainder[: rows - counts.sum()]] += 1
    if rows >= len(codes):
        # Small catalogues: lend one row from the largest class to each empty class.
        for empty in np.flatnonzero(counts == 0):
            counts[np.argmax(counts)] -= 1
            counts[empty] += 1
    return dict(zip(codes.tolist(), counts.tolist(), strict=True))


def _rng(*keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(list(keys)))


def _make_labels(seed: int, split: int, rows: int) -> np.ndarray:
    counts = allocate_counts(rows)
    labels = np.repeat(np.array(list(counts)), list(counts.values()))
    return _rng(seed, split, _STREAM_LABELS).permutation(labels)


def _make_ids(seed: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Unique product and image ids for all rows of both splits."""
    rng = _rng(seed, _STREAM_IDS)
    return _unique_ints(rng, _PRODUCTID_RANGE, rows), _unique_ints(rng, _IMAGEID_RANGE, rows)


def _unique_ints(rng: np.random.Generator, bounds: tuple[int, int], count: int) -> np.ndarray:
    """``count`` distinct integers in ``[low, high)``, in random order."""
    low, high = bounds
    return low + rng.choice(high - low, size=count, replace=False).astype(np.int64)


class _Defect(IntEnum):
    """State of a row's image file."""

    NONE = 0
    MISSING = 1
    EMPTY = 2
    TRUNCATED = 3
    NOT_JPEG = 4


_UNREADABLE_KINDS = (_Defect.EMPTY, _Defect.TRUNCATED, _Defect.NOT_JPEG)


def _defect_counts(rows: int) -> tuple[int, int]:
    """Missing and unreadable image counts for a split of ``rows`` rows."""
    missing = round(rows * MISSING_IMAGE_RATE)
    unreadable = min(math.ceil(rows * UNREADABLE_IMAGE_RATE), rows - missing)
    return missing, unreadable


def _make_defects(seed: int, split: int, rows: int, first_kind: int) -> np.ndarray:
    """Per-row defect; unreadable kinds rotate, continuing from ``first_kind`` across splits."""
    missing, unreadable = _defect_counts(rows)
    defects = np.full(rows, _Defect.NONE, dtype=np.int64)
    chosen = _rng(seed, split, _STREAM_DEFECTS).choice(rows, missing + unreadable, replace=False)
    defects[chosen[:missing]] = _Defect.MISSING
    kinds = [
        _UNREADABLE_KINDS[(first_kind + k) % len(_UNREADABLE_KINDS)] for k in range(unreadable)
    ]
    defects[chosen[missing:]] = kinds
    return defects


# --------------------------------------------------------------------------------------------
# Image files
# --------------------------------------------------------------------------------------------


def _jpeg_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


class _ImageJob(NamedTuple):
    """Everything a worker needs to write one image file, and nothing that depends on order."""

    path: str
    code: int
    seed: int
    split: int
    row: int
    defect: int


def _write_image(job: _ImageJob) -> None:
    path = Path(job.path)
    defect = _Defect(job.defect)
    if defect is _Defect.MISSING:
        path.unlink(missing_ok=True)  # a file left by an earlier run would hide the defect
        return
    if defect is _Defect.EMPTY:
        path.write_bytes(b"")
        return
    if defect is _Defect.NOT_JPEG:
        path.write_text("<html><body>404 Not Found</body></html>\n", encoding="utf-8")
        return
    data = _jpeg_bytes(render_image(job.code, _rng(job.seed, job.split, job.row, _STREAM_IMAGE)))
    # A transfer cut short: the header parses, the scan data ends early.
    path.write_bytes(data[: int(len(data) * 0.4)] if defect is _Defect.TRUNCATED else data)


def _write_images(jobs: list[_ImageJob], workers: int) -> None:
    if workers == 1 or len(jobs) < 2:
        for job in jobs:
            _write_image(job)
        return
    chunk = max(1, len(jobs) // (workers * 8))
    # Spawned workers, not forked ones: forking a caller that already runs threads (a Ray
    # driver, a web server) can deadlock, and spawn behaves the same on every platform.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=context) as pool:
        # Drain the results so that an exception in a worker is raised here.
        for _ in pool.map(_write_image, jobs, chunksize=chunk):
            pass


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=True, encoding="utf-8", lineterminator="\n")


def _validate(rows: int, test_rows: int, seed: int, workers: int | None) -> int:
    """Check the arguments and return the worker count to use."""
    if rows < len(CLASS_CODES):
        raise ValueError(f"rows must be >= {len(CLASS_CODES)} (one per class), got {rows}")
    if test_rows < 0:
        raise ValueError(f"test_rows must be >= 0, got {test_rows}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    if workers is not None and workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    return workers if workers is not None else os.cpu_count() or 1


def _write_split_csvs(
    root: Path,
    split: str,
    index: pd.RangeIndex,
    codes: np.ndarray,
    texts: tuple[list[str], list[str]],
    productids: np.ndarray,
    imageids: np.ndarray,
) -> list[Path]:
    """Write the X and Y files of one split; return their paths."""
    x_path, y_path = (
        (root / X_TRAIN_FILE, root / Y_TRAIN_FILE)
        if split == "train"
        else (root / X_TEST_FILE, root / Y_TEST_FILE)
    )
    columns = (*texts, productids, imageids)
    _write_csv(pd.DataFrame(dict(zip(X_COLUMNS, columns, strict=True)), index=index), x_path)
    _write_csv(pd.DataFrame({LABEL_COLUMN: codes}, index=index), y_path)
    return [x_path, y_path]


def _image_jobs(
    image_dir: Path,
    seed: int,
    split: int,
    codes: np.ndarray,
    productids: np.ndarray,
    imageids: np.ndarray,
    defects: np.ndarray,
) -> list[_ImageJob]:
    rows = zip(
        codes.tolist(), productids.tolist(), imageids.tolist(), defects.tolist(), strict=True
    )
    return [
        _ImageJob(str(image_dir / image_filename(iid, pid)), code, seed, split, row, defect)
        for row, (code, pid, iid, defect) in enumerate(rows)
    ]


def generate_catalogue(
    out_dir: str | Path,
    rows: int = 6000,
    test_rows: int = 1000,
    seed: int = 0,
    workers: int | None = None,
    images: bool = True,
) -> CatalogueSummary:
    """Write a synthetic catalogue in the challenge's raw layout.

    Writes ``X_train_update.csv``, ``Y_train_CVw08PX.csv``, ``X_test_update.csv`` (index
    continuing after the training rows), ``Y_test_labels.csv`` and, unless ``images`` is false,
    the JPEGs under ``images/image_train`` and ``images/image_test``. About 2% of rows have no
    image file and about 0.3% an unreadable one (empty, truncated, or text).

    Args:
        out_dir: destination folder, created if needed; existing files are overwritten.
        rows: training rows (at least 27, so every class appears).
        test_rows: test rows (0 for none; the test files are then written with headers only).
        seed: non-negative seed; the same arguments give byte-identical files.
        workers: processes drawing images; default ``os.cpu_count()``. Does not change output.
        images: also write the image files.

    Returns:
        What was written.

    Raises:
        ValueError: an argument is out of range.
    """
    started = time.perf_counter()
    workers = _validate(rows, test_rows, seed, workers)
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    productids, imageids = _make_ids(seed, rows + test_rows)
    csv_files: list[Path] = []
    image_dirs: list[Path] = []
    jobs: list[_ImageJob] = []
    for split_index, (split, offset, n) in enumerate(
        (("train", 0, rows), ("test", rows, test_rows))
    ):
        ids = slice(offset, offset + n)
        codes = _make_labels(seed, split_index, n)
        texts = _make_texts(seed, split_index, codes)
        csv_files += _write_split_csvs(
            root,
            split,
            pd.RangeIndex(offset, offset + n),
            codes,
            texts,
            productids[ids],
            imageids[ids],
        )
        if images:
            image_dir = root / IMAGE_SUBDIRS[split]
            image_dir.mkdir(parents=True, exist_ok=True)
            image_dirs.append(image_dir)
            unreadable_so_far = sum(job.defect in _UNREADABLE_KINDS for job in jobs)
            defects = _make_defects(seed, split_index, n, unreadable_so_far)
            jobs += _image_jobs(
                image_dir, seed, split_index, codes, productids[ids], imageids[ids], defects
            )
    _write_images(jobs, workers)
    return CatalogueSummary(
        root=root,
        csv_files=tuple(csv_files),
        image_dirs=tuple(image_dirs),
        train_rows=rows,
        test_rows=test_rows,
        missing_images=sum(job.defect == _Defect.MISSING for job in jobs),
        unreadable_images=sum(job.defect in _UNREADABLE_KINDS for job in jobs),
        elapsed_s=time.perf_counter() - started,
    )
