"""One training epoch of each demo deep model: Ray Train against plain PyTorch.

Both paths run the same epoch function (``rakuten_ray.training.loop.run_epoch``: one pass over
the training rows, then the validation rows) on the same rows of the real sample, with the
same batch size, seed and two CPU threads. The Ray Train path is ``TorchTrainer`` with one
worker of two CPUs, exactly as ``rakuten-ray train`` runs it; its epoch time is the one the
worker measures and reports, and everything else it costs (starting Ray, the worker group,
building the model, the checkpoint) is reported apart as overhead.

    python benchmarks/train_epoch.py [--data DIR] [--rows 512] [--val-rows 128] [--repeats 1]
        [--models e5_small effnet_lite0]

With ``--repeats N`` each path runs N epochs, alternating which path goes first, and the
fastest of each counts: other jobs on a shared machine only ever slow an epoch down.

Prints a table and writes ``benchmarks/results/train_epoch.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from rakuten_ray.config import load_config
from rakuten_ray.images import load_image
from rakuten_ray.models.registry import kind_of
from rakuten_ray.models.spec import DeepModelSpec
from rakuten_ray.training.data import load_training_data
from rakuten_ray.training.deep import fit_deep_model
from rakuten_ray.training.loop import prepare_training, run_epoch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO.parent / "shared/data/rakuten_sample"
RESULTS = REPO / "benchmarks/results/train_epoch.json"
MODELS = ("e5_small", "effnet_lite0")
THREADS = 2
SEED = 42


@dataclass(frozen=True)
class Tables:
    """Training and validation tables of one model."""

    train: pd.DataFrame
    val: pd.DataFrame


def benchmark_spec(spec: DeepModelSpec) -> DeepModelSpec:
    """The demo spec for one full fine-tuning epoch (no frozen warm-up or head fit, no
    retries)."""
    train = spec.train.model_copy(
        update={"epochs": 1, "freeze_backbone_epochs": 0, "head_fit": "sgd"}
    )
    scaling = spec.scaling.model_copy(
        update={"num_workers": 1, "cpus_per_worker": THREADS, "max_failures": 0}
    )
    return spec.model_copy(update={"train": train, "scaling": scaling})


def model_tables(spec: DeepModelSpec, data_dir: Path, rows: int, val_rows: int) -> Tables:
    """A fixed subset of the sample: text rows for text models, images for image models."""
    data = load_training_data(data_dir)
    kind = kind_of(spec)
    table = kind.table(spec, data.rows_for(kind.modality))
    subset = table.sample(n=min(len(table), rows + val_rows), random_state=SEED)
    return Tables(train=subset.iloc[:rows], val=subset.iloc[rows:])


def warm_file_cache(tables: Tables) -> None:
    """Read every image once, so neither path pays for cold disk reads."""
    for table in (tables.train, tables.val):
        for path in table.get("path", []):
            load_image(path)


def timed(action: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def plain_epoch(spec: DeepModelSpec, tables: Tables) -> dict[str, float]:
    """The epoch in this process, without Ray."""
    torch.set_num_threads(THREADS)
    torch.manual_seed(SEED)
    task = kind_of(spec).task(spec)
    cpu = torch.device("cpu")
    run, setup = timed(lambda: prepare_training(task, spec.train, tables.train, device=cpu))
    metrics, total = timed(
        lambda: run_epoch(task, run, spec.train, tables.val, 0, SEED, cpu, autocast=None)
    )
    return {**_epoch_times(metrics), "setup_seconds": setup, "total_seconds": setup + total}


def ray_epoch(spec: DeepModelSpec, tables: Tables, work_dir: Path) -> dict[str, float]:
    """The epoch under Ray Train (``TorchTrainer``, one worker), as ``rakuten-ray train`` runs."""
    fit, total = timed(lambda: fit_deep_model(spec, tables.train, tables.val, work_dir, SEED))
    times = _epoch_times(fit.history[0])
    return {**times, "overhead_seconds": total - times["epoch_seconds"], "total_seconds": total}


def _epoch_times(metrics: dict[str, float]) -> dict[str, float]:
    keys = ("train_seconds", "epoch_seconds", "train_loss", "val_log_loss")
    return {key: float(metrics[key]) for key in keys}


def fastest(runs: list[dict[str, float]]) -> dict[str, float]:
    """The repeat with the shortest epoch: the one least slowed by other jobs on the machine."""
    return min(runs, key=lambda run: run["epoch_seconds"])


def compare(spec: DeepModelSpec, tables: Tables, repeats: int, scratch: Path) -> dict[str, Any]:
    """``repeats`` epochs on each path, alternating which goes first."""
    plain, under_ray = [], []
    for repeat in range(repeats):
        ray_first = repeat % 2 == 1
        if ray_first:
            under_ray.append(ray_epoch(spec, tables, scratch / f"{spec.name}_{repeat}"))
        plain.append(plain_epoch(spec, tables))
        if not ray_first:
            under_ray.append(ray_epoch(spec, tables, scratch / f"{spec.name}_{repeat}"))
    best_plain, best_ray = fastest(plain), fastest(under_ray)
    return {
        "kind": spec.kind,
        "train_rows": len(tables.train),
        "val_rows": len(tables.val),
        "batch_size": spec.train.batch_size,
        "plain": best_plain,
        "ray_train": best_ray,
        "ratio_train": best_ray["train_seconds"] / best_plain["train_seconds"],
        "ratio_epoch": best_ray["epoch_seconds"] / best_plain["epoch_seconds"],
        "all_repeats": {"plain": plain, "ray_train": under_ray},
    }


def run_benchmark(
    data_dir: Path, rows: int, val_rows: int, repeats: int, models: tuple[str, ...] = MODELS
) -> dict[str, Any]:
    """Both paths for each of ``models`` (demo deep models); returns what the JSON file holds."""
    import ray

    config = load_config(REPO / "configs/demo.yaml")
    specs = {spec.name: benchmark_spec(spec) for spec in config.models() if spec.name in models}
    load_before = os.getloadavg()
    _, ray_start = timed(lambda: ray.init(num_cpus=THREADS, include_dashboard=False))
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, spec in specs.items():
            tables = model_tables(spec, data_dir, rows, val_rows)
            warm_file_cache(tables)
            results[name] = compare(spec, tables, repeats, Path(scratch))
            print_row(name, results[name], flush=True)
    ray.shutdown()
    return {
        "ray_start_seconds": ray_start,
        "threads": THREADS,
        "repeats": repeats,
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "torch": torch.__version__,
        "ray": ray.__version__,
        "models": results,
    }


HEADER = (
    f"{'model':<14}{'rows':>6}{'plain train s':>15}{'Ray train s':>13}{'ratio':>7}"
    f"{'plain epoch s':>15}{'Ray epoch s':>13}{'ratio':>7}{'Ray overhead s':>16}"
)


def print_row(name: str, result: dict[str, Any], flush: bool = False) -> None:
    plain, under_ray = result["plain"], result["ray_train"]
    print(
        f"{name:<14}{result['train_rows']:>6}{plain['train_seconds']:>15.1f}"
        f"{under_ray['train_seconds']:>13.1f}{result['ratio_train']:>7.2f}"
        f"{plain['epoch_seconds']:>15.1f}{under_ray['epoch_seconds']:>13.1f}"
        f"{result['ratio_epoch']:>7.2f}{under_ray['overhead_seconds']:>16.1f}",
        flush=flush,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rows", type=int, default=512, help="training rows (or images)")
    parser.add_argument("--val-rows", type=int, default=128, help="validation rows")
    parser.add_argument(
        "--repeats", type=int, default=1, help="epochs per path; the fastest counts"
    )
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    print(HEADER, flush=True)
    report = run_benchmark(args.data, args.rows, args.val_rows, args.repeats, tuple(args.models))
    print(f"Ray start-up (ray.init): {report['ray_start_seconds']:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
