"""Checks that keep a long scoring run from quietly doing the wrong thing.

Before any model loads: the image folder must be a folder; the rows must mostly find their
image there (a wrong ``--images`` would otherwise give a "successful" run scored from text
alone); a resumed run must continue with the bundle, the input, the image folder and the
settings that change results (:data:`RESULT_SETTINGS`) it started with. The run records them
(``OUT/run.json``, a :class:`~rakuten_ray.lifecycle.RunRecord`) when it starts, and the staged
rows once staging is complete, so a resume neither mixes predictions nor stages its input
again.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from pyarrow.fs import FileType

from rakuten_ray import storage
from rakuten_ray.catalog import ID_COLUMNS, SchemaError, image_filename
from rakuten_ray.config import ScoringParams
from rakuten_ray.layout import ScoringLayout
from rakuten_ray.lifecycle import RunRecord, data_fingerprint, resume_record
from rakuten_ray.scoring.rows import as_id
from rakuten_ray.storage import Location

#: Rows whose image is looked up before a run starts: all of them up to this many, else this
#: many spread evenly over the input (a lookup per row).
IMAGE_CHECK_ROWS = 20_000
#: Image lookups in flight at once.
LOOKUP_THREADS = 32
#: Missing images named in the error.
EXAMPLES = 5


def check_image_dir(image_dir: Location | None, needed: bool) -> None:
    """Refuse an image folder that does not exist or is not a folder (when the bundle has
    image models to feed); a URI's store must answer."""
    if not needed or image_dir is None:
        return
    found = storage.info(image_dir).type
    if found == FileType.NotFound:
        raise SchemaError(f"{image_dir}: the image folder (--images) does not exist")
    if found != FileType.Directory:
        raise SchemaError(f"{image_dir}: the image folder (--images) is not a folder")


def _sample_ids(shards: list[Path], total: int, limit: int) -> pd.DataFrame:
    """The ids of up to ``limit`` staged rows spread evenly over all of them, parsed."""
    wanted = np.unique(np.linspace(0, total - 1, num=min(total, limit)).round().astype(np.int64))
    parts, offset = [], 0
    for shard in shards:
        rows = pq.ParquetFile(shard).metadata.num_rows
        local = wanted[(wanted >= offset) & (wanted < offset + rows)] - offset
        if len(local):
            ids = pd.read_parquet(shard, columns=list(ID_COLUMNS)).iloc[local]
            parts.append(ids.reset_index(drop=True).apply(as_id))
        offset += rows
    return pd.concat(parts, ignore_index=True)


def check_images_found(
    shards: list[Path], total: int, image_dir: Location, max_missing_share: float
) -> None:
    """Refuse a run where more than ``max_missing_share`` of the rows find no image file
    (ids that name no file count as missing), measured on up to :data:`IMAGE_CHECK_ROWS`.

    Raises:
        SchemaError: how many rows were checked and missing, and the first missing paths.
    """
    rows = _sample_ids(shards, total, IMAGE_CHECK_ROWS)
    missing: list[str] = []
    paths: list[str] = []
    for imageid, productid in zip(rows["imageid"], rows["productid"], strict=True):
        if pd.isna(imageid) or pd.isna(productid):
            missing.append(f"(row without valid ids: imageid {imageid}, productid {productid})")
        else:
            paths.append(storage.join(image_dir, image_filename(int(imageid), int(productid))))
    # Lookups in an object store take milliseconds each: they run side by side.
    with ThreadPoolExecutor(LOOKUP_THREADS) as pool:
        found = list(pool.map(storage.is_file, paths))
    missing += [path for path, there in zip(paths, found, strict=True) if not there]
    share = len(missing) / len(rows)
    if share > max_missing_share:
        raise SchemaError(
            f"{image_dir}: {len(missing)} of {len(rows)} rows checked ({share:.0%}) find no "
            f"image, more than scoring.max_missing_image_share ({max_missing_share:.0%}); is "
            f"--images the right folder? First missing: {', '.join(missing[:EXAMPLES])}. "
            f"Pass --allow-missing-images to score them from their text"
        )


#: The options that name a scoring run's inputs, as its record names them.
BUNDLE_INPUT, SOURCE_INPUT, IMAGES_INPUT = "--bundle", "--input", "--images"
#: The scoring settings that change a row's output, by stage pool: the rows or tokens per
#: model call, the runtime of the deep models' forward passes, their threads (kernels may
#: round differently with another count) and its GPUs (a pool with one runs PyTorch, with
#: autocast). Everything else changes how the work is cut or whether a run starts,
#: never a row's output: pool sizes, ``batch_size``, ``rows_per_output_file``,
#: ``max_missing_image_share`` and ``--allow-missing-images``, the image preparation pool
#: (decoding is exact, its crops are the bundle's) and the fusion pool's resources (its
#: meta-models run at one fixed shape). Each model's precision and crops come from the
#: bundle itself, which its id covers.
RESULT_SETTINGS: dict[str, tuple[str, ...]] = {
    "text": ("micro_batch_size", "tokens_per_call", "runtime", "num_cpus", "num_gpus"),
    "image": ("micro_batch_size", "runtime", "num_cpus", "num_gpus"),
    "fusion": ("micro_batch_size",),
}


def input_fingerprint(files: list[Location]) -> str:
    """The input files' fingerprint: their names and contents, in order."""
    table = pd.DataFrame(
        {"file": [storage.name(p) for p in files], "sha256": [storage.sha256(p) for p in files]}
    )
    return data_fingerprint(table)


def _images_input(image_dir: Location | None) -> str:
    """The image folder as a run record names it (empty when the rows carry their images)."""
    if image_dir is None:
        return ""
    if storage.is_remote(image_dir):
        return storage.join(image_dir)
    return str(Path(image_dir).resolve())


def scoring_record(
    bundle_id: str, files: list[Location], image_dir: Location | None, scoring: ScoringParams
) -> RunRecord:
    """What a scoring run scores: the bundle, the input, the image folder (resolved) and the
    :data:`RESULT_SETTINGS`, keyed as ``--set`` names them."""
    inputs = {
        BUNDLE_INPUT: bundle_id,
        SOURCE_INPUT: input_fingerprint(files),
        IMAGES_INPUT: _images_input(image_dir),
    }
    pools = {
        pool: {name: getattr(getattr(scoring, pool), name) for name in names}
        for pool, names in RESULT_SETTINGS.items()
    }
    return RunRecord("scoring", inputs, {"scoring": pools})


def check_resumable(layout: ScoringLayout, record: RunRecord) -> RunRecord | None:
    """The interrupted run's record, if ``layout`` holds one for the same bundle, input,
    image folder and result settings.

    Returns:
        None when there is nothing to resume (no output yet): the run starts afresh.

    Raises:
        ResumeError: each input or setting that differs from the interrupted run's.
        SchemaError: the output holds predictions without a record of what they scored.
    """
    saved = resume_record(
        layout.record, record, "resume with the interrupted run's, or use --overwrite"
    )
    if saved is None and any(layout.predictions.glob("*.parquet")):
        raise SchemaError(
            f"{layout.root}: predictions without a record of their bundle and input "
            f"({layout.record.name}); score into a new folder or use --overwrite"
        )
    return saved
