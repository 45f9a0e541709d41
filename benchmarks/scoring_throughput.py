"""Scoring throughput: the Ray engine, the in-process engine and each stage alone.

The same bundle and the same rows go through ``run_scoring`` with ``engine="local"`` and
``engine="ray"``, and through ``TextStage``, ``ImagePrepStage``, ``ImageStage`` and
``FusionStage`` called in this
process on pre-normalised batches of the sizes the engines use. Two datasets: the real test
images of the Rakuten sample (texts from its CSVs, cycled) and a demo catalogue.

    .venv/bin/python benchmarks/scoring_throughput.py [--bundle B] [--rows 2000] [--demo-rows 2000]

Prints a table per dataset and writes ``benchmarks/results/scoring_throughput.json``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from common import (
    base_parser,
    cpu_ms_per_row,
    demo_catalogue,
    ensure_bundle,
    format_table,
    load_line,
    machine,
    measured,
    real_catalogue,
    scored_run,
    start_ray,
    write_results,
)

from rakuten_ray.bundle import open_bundle
from rakuten_ray.layout import IMAGE_PROBS
from rakuten_ray.scoring.local import DEFAULT_BATCH_ROWS
from rakuten_ray.scoring.rows import input_files, normalise_batch, stage_inputs
from rakuten_ray.scoring.run import ROWS_PER_SHARD
from rakuten_ray.scoring.stages import FusionStage, ImagePrepStage, ImageStage, TextStage

STAGES = ("text", "image_prep", "image", "fusion")
#: Targets of the performance issue, checked in the report.
RAY_VS_LOCAL_TARGET = 0.9
OVERHEAD_TARGET = 1.15


@dataclass(frozen=True)
class Dataset:
    """Rows to score: a challenge-style CSV and the folder of its images."""

    name: str
    source: Path
    image_dir: Path


def batch_sizes(bundle: Path) -> dict[str, dict[str, int]]:
    """Rows per batch of each stage, per engine: the local engine uses one size for all."""
    scoring = open_bundle(bundle).scoring()
    return {
        "local": dict.fromkeys(STAGES, DEFAULT_BATCH_ROWS),
        "ray": {stage: getattr(scoring, stage).batch_size for stage in STAGES},
    }


def normalised_rows(dataset: Dataset, workdir: Path) -> pd.DataFrame:
    """The rows as a run stages and normalises them, before any stage runs."""
    staging = workdir / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    stage_inputs(input_files(dataset.source), staging, ROWS_PER_SHARD)
    frame = pd.concat([pd.read_parquet(p) for p in sorted(staging.glob("*.parquet"))])
    return normalise_batch(frame.reset_index(drop=True))


def in_batches(frame: pd.DataFrame, size: int) -> list[pd.DataFrame]:
    return [frame.iloc[start : start + size] for start in range(0, len(frame), size)]


def time_stage(stage: Any, frame: pd.DataFrame, size: int) -> tuple[pd.DataFrame, dict]:
    """Call ``stage`` on every batch of ``size`` rows; its output and its usage."""
    batches = in_batches(frame, size)
    with measured() as usage:
        outputs = [stage(batch) for batch in batches]
    result = {"batch_size": size, "rows_per_s": len(frame) / usage.wall_s, **usage.as_dict()}
    return pd.concat(outputs, ignore_index=True), result


def load_stages(bundle: Path, image_dir: Path) -> tuple[dict[str, Any], float]:
    """The stages built as the local engine builds them, and the seconds it took."""
    started = time.perf_counter()
    pools = open_bundle(bundle).scoring()
    stages = {
        "text": TextStage(str(bundle), pools.text),
        "image_prep": ImagePrepStage(str(bundle), str(image_dir), pools.image_prep),
        "image": ImageStage(str(bundle), pools.image),
        "fusion": FusionStage(str(bundle), pools.fusion),
    }
    return stages, time.perf_counter() - started


def stages_alone(
    bundle: Path, dataset: Dataset, rows: pd.DataFrame, sizes: dict[str, dict[str, int]]
) -> dict[str, Any]:
    """Time each stage alone once per distinct batch size the engines use.

    Each stage's input is the timed output of the stage before it (fusion's: the text and
    image probabilities), so building it costs nothing extra.
    """
    stages, load_s = load_stages(bundle, dataset.image_dir)
    timings: dict[str, dict[int, dict]] = {stage: {} for stage in STAGES}
    outputs: dict[str, pd.DataFrame] = {}
    for stage in STAGES:
        if stage == "image":
            rows = outputs["image_prep"]
        if stage == "fusion":
            image_columns = outputs["image"][["image_status", *IMAGE_PROBS]]
            rows = pd.concat([outputs["text"], image_columns], axis=1)
        for size in sorted({sizes[engine][stage] for engine in sizes}):
            outputs[stage], timings[stage][size] = time_stage(stages[stage], rows, size)
    return {"load_s": round(load_s, 3), "timings": timings}


def engine_run(bundle: Path, dataset: Dataset, workdir: Path, engine: str) -> dict[str, Any]:
    """One whole sampled run of ``dataset`` with ``engine``."""
    out = workdir / f"out-{engine}"
    return scored_run(bundle, dataset.source, dataset.image_dir, out, engine)


def ratios(result: dict[str, Any], sizes: dict[str, dict[str, int]]) -> dict[str, float]:
    """Ray/local throughput, and each engine's wall time over the sum of its stages alone.

    The same ratios in CPU seconds (``*_cpu``) say how much work each way costs, which other
    jobs on the machine disturb far less than wall time.
    """
    engines, timings = result["engines"], result["stages"]["timings"]
    out = {
        "ray_vs_local": engines["ray"]["rows_per_s"] / engines["local"]["rows_per_s"],
        "ray_vs_local_cpu": engines["local"]["cpu_s"] / engines["ray"]["cpu_s"],
    }
    for engine in ("local", "ray"):
        wall, cpu = (
            sum(timings[s][sizes[engine][s]][measure] for s in STAGES)
            for measure in ("wall_s", "cpu_s")
        )
        out[f"{engine}_vs_stage_sum"] = engines[engine]["wall_s"] / wall
        out[f"{engine}_vs_stage_sum_cpu"] = engines[engine]["cpu_s"] / cpu
        with_loading = wall + result["stages"]["load_s"]
        out[f"{engine}_vs_stage_sum_plus_loading"] = engines[engine]["wall_s"] / with_loading
    return {key: round(value, 3) for key, value in out.items()}


def dataset_table(result: dict[str, Any]) -> str:
    """Engines and stages of one dataset, one line each."""
    count = result["engines"]["local"]["rows"]
    rows = [
        [f"engine {name}", None, run["wall_s"], run["rows_per_s"], cpu_ms_per_row(run, count),
         run["cpu_per_wall"], run["peak_total_mib"]]
        for name, run in result["engines"].items()
    ]  # fmt: skip
    for stage, by_size in result["stages"]["timings"].items():
        rows += [
            [f"{stage} stage alone", size, t["wall_s"], t["rows_per_s"], cpu_ms_per_row(t, count),
             t["cpu_per_wall"], t["peak_total_mib"]]
            for size, t in by_size.items()
        ]  # fmt: skip
    header = ["what", "batch", "wall s", "rows/s", "CPU ms/row", "CPU/wall", "peak MiB"]
    return format_table(header, rows)


def ratio_lines(values: dict[str, float]) -> list[str]:
    checks = {
        "ray_vs_local": f">= {RAY_VS_LOCAL_TARGET}",
        "local_vs_stage_sum": f"<= {OVERHEAD_TARGET}",
        "ray_vs_stage_sum": f"<= {OVERHEAD_TARGET}",
    }
    return [
        f"  {key}: {value:.3f}  (target {checks.get(key, '-')})" for key, value in values.items()
    ]


def datasets(args: Any) -> list[Dataset]:
    real = real_catalogue(args.sample, args.workdir, args.rows)
    demo_source, demo_images = demo_catalogue(args.workdir, args.demo_rows)
    return [
        Dataset("real_test_images", real, args.sample / "images" / "image_test"),
        Dataset("demo_catalogue", demo_source, demo_images),
    ]


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000, help="rows of the real dataset")
    parser.add_argument("--demo-rows", type=int, default=2000, help="rows of the demo dataset")
    args = parser.parse_args()
    bundle = ensure_bundle(args.bundle)
    sizes = batch_sizes(bundle)
    payload: dict[str, Any] = {"bundle": str(bundle), "batch_sizes": sizes, "datasets": {}}
    payload["machine_before"] = machine()
    chosen = datasets(args)
    # In-process measurements first, while no Ray daemon competes for the CPUs.
    for dataset in chosen:
        print(f"[bench] {dataset.name}: stages alone, then the local engine")
        rows = normalised_rows(dataset, args.workdir)
        payload["datasets"][dataset.name] = {
            "stages": stages_alone(bundle, dataset, rows, sizes),
            "engines": {"local": engine_run(bundle, dataset, args.workdir, "local")},
        }
    payload["ray_start_s"] = round(start_ray(), 3)
    for dataset in chosen:
        print(f"[bench] {dataset.name}: the Ray engine")
        result = payload["datasets"][dataset.name]
        result["engines"]["ray"] = engine_run(bundle, dataset, args.workdir, "ray")
        result["ratios"] = ratios(result, sizes)
    payload["machine_after"] = machine()
    for name, result in payload["datasets"].items():
        print(f"\n{name}\n{dataset_table(result)}")
        print("\n".join(ratio_lines(result["ratios"])))
    print(load_line(payload))
    write_results("scoring_throughput", payload)


if __name__ == "__main__":
    main()
