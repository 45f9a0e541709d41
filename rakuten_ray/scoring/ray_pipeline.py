"""The Ray Data engine: staged shards -> text, image preparation, image model and fusion
actor pools -> Parquet."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from rakuten_ray.config import ScoringParams, StagePool
from rakuten_ray.layout import ROW_COLUMN
from rakuten_ray.scoring.output import predictions_table
from rakuten_ray.scoring.rowset import RowSet
from rakuten_ray.scoring.stages import FusionStage, ImagePrepStage, ImageStage, TextStage

logger = logging.getLogger(__name__)

#: CPUs reserved by each read or write task.
IO_CPUS = 0.1
#: Most blocks an input is read into: past it, blocks grow with the input instead, so that
#: the driver's memory stays flat however many rows are scored
#: (``benchmarks/driver_memory.py``).
MAX_READ_BLOCKS = 256


def _pool_args(pool: StagePool) -> dict:
    import ray.data

    if pool.max_pool_size is None:
        compute = ray.data.ActorPoolStrategy(size=pool.pool_size)
    else:
        compute = ray.data.ActorPoolStrategy(min_size=pool.pool_size, max_size=pool.max_pool_size)
    return {
        "compute": compute,
        "num_cpus": pool.num_cpus,
        "num_gpus": pool.num_gpus,
        "batch_size": pool.batch_size,
        "batch_format": "pandas",
    }


def _warn_if_pools_exceed_cluster(scoring: ScoringParams) -> None:
    """Pools that hold every CPU leave none for reading and writing: the run would stall."""
    import ray

    pools = (scoring.text, scoring.image_prep, scoring.image, scoring.fusion)
    # Autoscaling pools start at their smallest size: that is what must fit.
    wanted = sum(pool.pool_size * pool.num_cpus for pool in pools) + 2 * IO_CPUS
    available = ray.cluster_resources().get("CPU", 0.0)
    if wanted > available + 1e-6:  # sums of decimal fractions round up by a hair
        logger.warning(
            "scoring pools ask for %.2f CPUs (reads and writes included) but the cluster has "
            "%.2f now: the run waits for the cluster to grow; lower scoring.*.num_cpus or "
            "pool_size if it cannot", wanted, available,
        )  # fmt: skip


def read_blocks(rows: int, scoring: ScoringParams) -> int:
    """How many blocks the input is read into: one text batch each for a small input, so
    the image pool starts as soon as the first texts are scored rather than after a whole
    shard's share; at most :data:`MAX_READ_BLOCKS` for a large one, as the driver keeps
    bookkeeping for every block of every stage."""
    return max(1, min(MAX_READ_BLOCKS, math.ceil(rows / scoring.text.batch_size)))


class _SkipDone:
    """Drops rows whose ``row`` already has a prediction (an interrupted run's, or one
    carried over from a previous output)."""

    def __init__(self, done_rows: RowSet) -> None:
        self.done_rows = done_rows

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        return batch[~self.done_rows.contains(batch[ROW_COLUMN].to_numpy())]


def score_with_ray(
    bundle_dir: str | Path,
    shards: list[Path],
    image_dir: str | Path | None,
    out_dir: Path,
    scoring: ScoringParams,
    done_rows: RowSet | None = None,
) -> None:
    """Stream the staged shards through the stages' actor pools into ``out_dir``.

    Args:
        bundle_dir: the sealed bundle (each actor hashes the files it loads before loading).
        shards: staged input Parquet files.
        image_dir: folder of the product images (a path every node can read, or a URI);
            ``None`` when the shards carry each row's image.
        out_dir: Parquet output folder; files hold at most ``rows_per_output_file`` rows.
        scoring: pool sizes, batch sizes and resources per stage.
        done_rows: rows already predicted (by an interrupted run, or carried over), skipped
            here.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = True
    # The V2 Parquet reader adds a file-listing step that always asks for a whole CPU; on a
    # node whose CPUs the actor pools already hold, it never starts. The V1 reader honours
    # the read's own resource request.
    context.use_datasource_v2 = False
    # Reading and writing are light next to the models: they get a sliver of a CPU so that the
    # actor pools can hold the rest of a small machine without starving them.
    _warn_if_pools_exceed_cluster(scoring)
    rows = sum(pq.ParquetFile(shard).metadata.num_rows for shard in shards)
    dataset = ray.data.read_parquet(
        [str(p) for p in shards], num_cpus=IO_CPUS, override_num_blocks=read_blocks(rows, scoring)
    )
    if done_rows is not None and len(done_rows):
        dataset = dataset.map_batches(
            _SkipDone, fn_constructor_args=(done_rows,), batch_format="pandas",
            compute=ray.data.ActorPoolStrategy(size=1), num_cpus=IO_CPUS,
        )  # fmt: skip
    bundle, images = str(bundle_dir), None if image_dir is None else str(image_dir)
    stages = (
        (TextStage, {"bundle_dir": bundle}, scoring.text),
        (ImagePrepStage, {"bundle_dir": bundle, "image_dir": images}, scoring.image_prep),
        (ImageStage, {"bundle_dir": bundle}, scoring.image),
        (FusionStage, {"bundle_dir": bundle}, scoring.fusion),
    )
    for stage, arguments, pool in stages:
        dataset = dataset.map_batches(
            stage, fn_constructor_kwargs={**arguments, "pool": pool}, **_pool_args(pool)
        )
    # The local engine's schema and pandas metadata, so that both engines' files read back
    # alike; then files of rows_per_output_file rows (the last of each write task fewer).
    dataset = dataset.map_batches(predictions_table, batch_format="pandas", num_cpus=IO_CPUS)
    dataset.write_parquet(
        str(out_dir),
        min_rows_per_file=scoring.rows_per_output_file,
        max_rows_per_file=scoring.rows_per_output_file,
        ray_remote_args={"num_cpus": IO_CPUS},
    )
