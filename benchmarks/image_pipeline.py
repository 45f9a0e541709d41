"""Image preparation in the Ray engine against the machine's decode-and-crop bound.

The same real rows (the sample's test images, cycled) and the same bundle's crops, measured
in one run:

1. **bound**: every core decoding and cropping its share of the rows with
   ``ImagePrepStage`` in a process of its own (one thread each), no Ray, nothing else: the
   most images per second this machine decodes and crops;
2. **pipeline**: Ray Data takes the rows from the object store in blocks of one batch, runs
   ``ImagePrepStage`` in an actor pool of one actor per core, and hands the fixed-size arrays
   to a trivial model stage (the mean of each crop), as the engine hands them to the image
   models.

Target: the pipeline's rows/s at least 0.8 of the bound.

    .venv/bin/python -u benchmarks/image_pipeline.py --bundle demo_run/run/bundle [--rows 2000]

Writes ``benchmarks/results/image_pipeline.json``.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import base_parser, ensure_bundle, load_line, machine, real_catalogue, write_results

from rakuten_ray.config import StagePool
from rakuten_ray.layout import CROP_PREFIX
from rakuten_ray.scoring.rows import input_files, normalise_batch, stage_inputs
from rakuten_ray.scoring.run import ROWS_PER_SHARD
from rakuten_ray.scoring.stages import ImagePrepStage

TARGET = 0.8
BATCH = 64
#: One actor per core, each holding a core (less a sliver for reading and the model stage).
ACTOR_CPUS = 0.9


def prepared_rows(bundle: str, image_dir: str, rows: pd.DataFrame) -> int:
    """Decode and crop ``rows`` in this process, one thread, in batches; rows done."""
    stage = ImagePrepStage(bundle, image_dir, StagePool(num_cpus=1))
    for start in range(0, len(rows), BATCH):
        stage(rows.iloc[start : start + BATCH])
    return len(rows)


def bound(bundle: Path, image_dir: Path, rows: pd.DataFrame, cores: int) -> dict[str, Any]:
    """Rows/s of ``cores`` processes, each decoding and cropping an equal share."""
    shares = np.array_split(np.arange(len(rows)), cores)
    with ProcessPoolExecutor(cores) as pool:
        # Warm each process (imports, the bundle's settings) before the clock starts.
        list(pool.map(prepared_rows, [str(bundle)] * cores, [str(image_dir)] * cores,
                      [rows.iloc[:4]] * cores))  # fmt: skip
        started = time.perf_counter()
        done = sum(pool.map(prepared_rows, [str(bundle)] * cores, [str(image_dir)] * cores,
                            [rows.iloc[share] for share in shares]))  # fmt: skip
        wall = time.perf_counter() - started
    return {"processes": cores, "rows": done, "wall_s": round(wall, 3),
            "rows_per_s": round(done / wall, 2)}  # fmt: skip


def trivial_model(batch: pd.DataFrame) -> pd.DataFrame:
    """Stands in for the image models: reads every crop, returns one number per row."""
    columns = [c for c in batch.columns if c.startswith(CROP_PREFIX)]
    means = sum(np.stack(batch[c].to_numpy()).mean(axis=(1, 2, 3)) for c in columns)
    return pd.DataFrame({"row": batch["row"].to_numpy(), "mean": means})


def pipeline(bundle: Path, image_dir: Path, dataset: Any, cores: int) -> dict[str, Any]:
    """Rows/s of Ray Data: ``dataset`` -> image preparation pool -> trivial model stage.

    Ray Data starts a new actor pool for every run, so the steady rate is counted from the
    first batch out of the model stage (the bound's processes are started before its clock
    too); the rate including the pool's start is reported beside it.
    """
    import ray.data

    started = time.perf_counter()
    dataset = dataset.map_batches(
        ImagePrepStage,
        fn_constructor_kwargs={"bundle_dir": str(bundle), "image_dir": str(image_dir),
                               "pool": StagePool(num_cpus=ACTOR_CPUS)},  # fmt: skip
        compute=ray.data.ActorPoolStrategy(size=cores), num_cpus=ACTOR_CPUS,
        batch_size=BATCH, batch_format="pandas",
    )  # fmt: skip
    dataset = dataset.map_batches(trivial_model, batch_format="pandas", num_cpus=0.05)
    done, first, first_at = 0, 0, 0.0
    for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
        if not done:
            first, first_at = len(batch["row"]), time.perf_counter()
        done += len(batch["row"])
    ended = time.perf_counter()
    return {
        "actors": cores, "rows": done, "wall_s": round(ended - started, 3),
        "rows_per_s_with_start": round(done / (ended - started), 2),
        "rows_per_s": round((done - first) / (ended - first_at), 2),
    }  # fmt: skip


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows decoded and cropped")
    args = parser.parse_args()
    bundle = ensure_bundle(args.bundle)
    image_dir = args.sample / "images" / "image_test"
    source = real_catalogue(args.sample, args.workdir, args.rows)
    staging = args.workdir / "image-pipeline-staging"
    shutil.rmtree(staging, ignore_errors=True)
    stage_inputs(input_files(source), staging, ROWS_PER_SHARD)
    staged = [pd.read_parquet(p) for p in sorted(staging.glob("*.parquet"))]
    # The ids typed as the text stage hands them on in the engine.
    rows = normalise_batch(pd.concat(staged, ignore_index=True))
    cores = os.cpu_count() or 1
    payload: dict[str, Any] = {"bundle": str(bundle), "rows": args.rows, "cores": cores}
    payload["machine_before"] = machine()
    print(f"[bench] bound: {cores} processes decoding and cropping")
    payload["bound"] = bound(bundle, image_dir, rows, cores)
    print(f"[bench] Ray Data: {cores} preparation actors and a trivial model stage")
    import ray
    import ray.data

    ray.init(num_cpus=cores, include_dashboard=False, logging_level="ERROR")
    ray.data.DataContext.get_current().use_datasource_v2 = False  # as the engine reads
    # A warm-up run starts Ray's workers, as the bound's warm-up did its processes.
    pipeline(bundle, image_dir, ray.data.from_pandas(rows.head(4 * BATCH)), cores)
    # Blocks of one batch each, as the engine's text stage hands them on (in the object store).
    blocks = [rows.iloc[start : start + BATCH] for start in range(0, len(rows), BATCH)]
    payload["pipeline"] = pipeline(bundle, image_dir, ray.data.from_pandas(blocks), cores)
    ray.shutdown()
    payload["machine_after"] = machine()
    ratio = payload["pipeline"]["rows_per_s"] / payload["bound"]["rows_per_s"]
    payload["ratio"] = round(ratio, 3)
    print(f"  bound: {payload['bound']}")
    print(f"  pipeline: {payload['pipeline']}")
    print(f"  pipeline / bound: {ratio:.3f} (target >= {TARGET})")
    print(load_line(payload))
    write_results("image_pipeline", payload)


if __name__ == "__main__":
    main()
