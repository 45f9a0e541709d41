"""Helpers shared by the benchmark scripts: inputs, the bundle, job sampling, tables, JSON.

Every script measures on one machine in one run, so its ratios compare like with like; the
absolute numbers depend on the machine and on what else runs on it (the load average is
recorded next to them).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rakuten_ray.catalog import read_products

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / "benchmarks" / ".cache"
RESULTS = REPO / "benchmarks" / "results"
#: Where ``make bench`` trains its bundles when none is given.
CACHED_BUNDLE = CACHE / "demo" / "run" / "bundle"
LIGHT_BUNDLE = CACHE / "light" / "run" / "bundle"
SAMPLE = Path(os.environ.get("RAKUTEN_SAMPLE_DIR", REPO.parent / "shared/data/rakuten_sample"))
_IMAGE_NAME = re.compile(r"image_(\d+)_product_(\d+)\.jpg")
#: A smaller demo than ``rakuten-ray demo``: the same model architectures (so scoring
#: costs the same), fewer rows and one epoch each, so that it trains in a few minutes.
_BENCH_DEMO = {"rows": 1000, "test_rows": 200}
_BENCH_OVERRIDES = (
    "text_models.e5_small.train.epochs=1",
    "image_models.effnet_lite0.train.epochs=1",
)
#: The light bundle for the scaling runs: the same models and stages fed smaller inputs
#: (16 tokens, 32-pixel images), so that 100,000 rows score in minutes rather than hours.
_LIGHT_OVERRIDES = (
    *_BENCH_OVERRIDES,
    "text_models.e5_small.max_length=16",
    "image_models.effnet_lite0.image_size=32",
)


def base_parser(description: str) -> argparse.ArgumentParser:
    """The options every benchmark takes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--bundle", type=Path, default=None,
        help=f"a sealed bundle folder (default: {CACHED_BUNDLE.relative_to(REPO)}, "
        "trained on first use)",
    )  # fmt: skip
    parser.add_argument(
        "--sample", type=Path, default=SAMPLE, help="the real Rakuten sample folder"
    )
    parser.add_argument(
        "--workdir", type=Path, default=CACHE / "work", help="scratch folder for inputs and outputs"
    )
    return parser


def ensure_bundle(bundle: Path | None, light: bool = False) -> Path:
    """``bundle`` if given; else a cached benchmark bundle, trained once if absent.

    ``light`` picks the light bundle (small inputs) over the demo-sized one.
    """
    if bundle is not None:
        return bundle
    cached, overrides = (
        (LIGHT_BUNDLE, _LIGHT_OVERRIDES) if light else (CACHED_BUNDLE, _BENCH_OVERRIDES)
    )
    if not cached.is_dir():
        from rakuten_ray.demo import run_demo

        print(f"[bench] no bundle given: training one in {cached.parent} (minutes)")
        run_demo(cached.parent.parent, overrides=overrides, **_BENCH_DEMO)
    return cached


def real_texts(sample: Path) -> pd.DataFrame:
    """Designations and descriptions of the sample's test rows, then its training rows."""
    frames = [read_products(sample / name) for name in ("X_test_update.csv", "X_train_update.csv")]
    return pd.concat(frames)[["designation", "description"]].reset_index(drop=True)


def image_ids(image_dir: Path, limit: int | None = None) -> pd.DataFrame:
    """``imageid`` and ``productid`` of the images in ``image_dir``, parsed from file names."""
    names = sorted(p.name for p in image_dir.iterdir())
    ids = [match.groups() for name in names if (match := _IMAGE_NAME.fullmatch(name))]
    frame = pd.DataFrame(ids[:limit], columns=["imageid", "productid"]).astype("int64")
    return frame


def cycled_rows(texts: pd.DataFrame, ids: pd.DataFrame, rows: int) -> pd.DataFrame:
    """``rows`` products in the raw layout: texts and image ids each cycled to length."""
    text_at = [i % len(texts) for i in range(rows)]
    ids_at = [i % len(ids) for i in range(rows)]
    frame = pd.concat(
        [
            texts.iloc[text_at].reset_index(drop=True),
            ids.iloc[ids_at].reset_index(drop=True)[["productid", "imageid"]],
        ],
        axis=1,
    )
    frame.index = pd.RangeIndex(rows)
    return frame


def write_input(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` as a challenge-style CSV (unnamed index first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path)
    return path


def real_catalogue(sample: Path, workdir: Path, rows: int, images: int | None = None) -> Path:
    """A CSV of ``rows`` real products whose images are the sample's test images.

    Texts come from the sample's CSVs and image ids from the first ``images`` test image
    files (all of them by default), each cycled independently.
    """
    image_dir = sample / "images" / "image_test"
    frame = cycled_rows(real_texts(sample), image_ids(image_dir, images), rows)
    return write_input(frame, workdir / f"real-{rows}-{images or 'all'}.csv")


def demo_catalogue(workdir: Path, rows: int) -> tuple[Path, Path]:
    """The demo catalogue's ``rows`` test products (CSV) and their image folder, cached."""
    from rakuten_ray.synthetic import generate_catalogue

    folder = workdir / f"demo-{rows}"
    if not (folder / "X_test_update.csv").is_file():
        # Training rows are not scored here: the fewest the generator accepts.
        generate_catalogue(folder, rows=27, test_rows=rows, seed=1)
    return folder / "X_test_update.csv", folder / "images" / "image_test"


# -- Sampling the CPU and memory of a whole job ---------------------------------------------


def _psutil() -> Any:
    """psutil, which Ray ships in its wheel and puts on ``sys.path`` when imported."""
    import ray  # noqa: F401  (puts the bundled psutil on sys.path)

    return importlib.import_module("psutil")


def _object_store_probe() -> Callable[[], int | None]:
    """Bytes in use in the connected Ray cluster's object store; None without Ray."""
    import ray

    if not ray.is_initialized():
        return lambda: None
    from ray._private import internal_api  # private, but what ``ray memory`` itself calls

    state = internal_api.get_state_from_address(ray.get_runtime_context().gcs_address)

    def probe() -> int | None:
        try:
            reply = internal_api.get_memory_info_reply(state)
            return int(reply.store_stats.object_store_bytes_used)
        except Exception:  # a probe must never break the measurement
            return None

    return probe


@dataclass
class JobUsage:
    """CPU and memory of this process and all its descendants (a local Ray cluster's too)."""

    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_bytes: int = 0
    peak_object_store_bytes: int | None = None
    peak_total_bytes: int = 0
    samples: int = 0
    _start_cpu: dict[int, float] = field(default_factory=dict, repr=False)
    _last_cpu: dict[int, float] = field(default_factory=dict, repr=False)

    @property
    def cpu_per_wall(self) -> float:
        """Average cores busy: 1.0 is one core flat out."""
        return self.cpu_s / self.wall_s if self.wall_s else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cpu_s": round(self.cpu_s, 3),
            "cpu_per_wall": round(self.cpu_per_wall, 3),
            "peak_rss_mib": round(self.peak_rss_bytes / 2**20, 1),
            "peak_object_store_mib": (
                None
                if self.peak_object_store_bytes is None
                else round(self.peak_object_store_bytes / 2**20, 1)
            ),
            "peak_total_mib": round(self.peak_total_bytes / 2**20, 1),
            "samples": self.samples,
        }


class JobSampler:
    """Samples the process tree every ``interval`` seconds on a background thread.

    CPU is the growth of each process's user + system time since the first sample (processes
    born during the run count from zero), so time spent by Ray workers, the raylet and the
    GCS counts as well as the driver's. Memory is the summed RSS of the tree plus the object
    store bytes in use, each sample; shared pages are counted once per process, so the RSS sum
    is an upper bound.
    """

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.usage = JobUsage()
        self._psutil = _psutil()
        self._store = _object_store_probe()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _processes(self) -> list[Any]:
        me = self._psutil.Process()
        return [me, *me.children(recursive=True)]

    def sample(self) -> None:
        """Take one sample."""
        rss, usage = 0, self.usage
        for process in self._processes():
            try:
                with process.oneshot():
                    times = process.cpu_times()
                    rss += process.memory_info().rss
            except (self._psutil.NoSuchProcess, self._psutil.AccessDenied):
                continue
            # Children's times are left out: a reaped Ray worker would be counted twice.
            cpu = times.user + times.system
            usage._start_cpu.setdefault(process.pid, cpu if usage.samples == 0 else 0.0)
            usage._last_cpu[process.pid] = cpu
        store = self._store()
        usage.peak_rss_bytes = max(usage.peak_rss_bytes, rss)
        if store is not None:
            usage.peak_object_store_bytes = max(usage.peak_object_store_bytes or 0, store)
        usage.peak_total_bytes = max(usage.peak_total_bytes, rss + (store or 0))
        usage.samples += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self) -> JobSampler:
        self.sample()
        self._started = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        usage = self.usage
        usage.wall_s = time.perf_counter() - self._started
        usage.cpu_s = sum(usage._last_cpu[pid] - start for pid, start in usage._start_cpu.items())


def tree_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds so far (user + system) of process ``pid`` and its descendants (a local
    Ray instance's workers among them), summed by process title."""
    psutil = _psutil()
    root = psutil.Process(pid)
    used: dict[str, float] = {}
    for process in [root, *root.children(recursive=True)]:
        try:
            title = (process.cmdline() or [process.name()])[0]
            times = process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        used[title] = used.get(title, 0.0) + times.user + times.system
    return used


@contextmanager
def measured(interval: float = 0.5) -> Iterator[JobUsage]:
    """Time the body and sample the job's CPU and memory while it runs."""
    sampler = JobSampler(interval)
    with sampler:
        yield sampler.usage


# -- Reporting ---------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the numbers were measured on, with the load average at the time of the call."""
    import torch

    return {
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def cpu_ms_per_row(usage: dict[str, Any], rows: int) -> float:
    """CPU milliseconds per row: steadier than wall time on a machine shared with other jobs."""
    return 1000.0 * usage["cpu_s"] / rows


def load_line(payload: dict[str, Any]) -> str:
    """The load averages recorded before and after a benchmark, for its printout."""
    before, after = payload["machine_before"], payload["machine_after"]
    return (
        f"\nload average (1, 5, 15 min) before {before['load_average']}, "
        f"after {after['load_average']}"
    )


def format_table(header: list[str], rows: list[list[Any]]) -> str:
    """A plain-text table; floats get three significant decimals."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
        return "-" if value is None else str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in [header, *cells]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def write_results(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` and return its path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(payload, indent=1) + "\n")
    print(f"\n[bench] wrote {path.relative_to(REPO)}")
    return path


def scored_run(
    bundle: Path, source: Path, image_dir: Path, out: Path, engine: str,
    overrides: tuple[str, ...] = (),
) -> dict[str, Any]:  # fmt: skip
    """One whole sampled ``run_scoring`` with ``engine`` (``ray`` or ``local``) and the
    bundle's config with ``overrides``."""
    from rakuten_ray.scoring.run import run_scoring

    with measured() as usage:
        summary = run_scoring(
            bundle, source, image_dir, out, engine=engine, overwrite=True, overrides=overrides
        )
    return {
        "rows": summary.rows,
        "rows_per_s": summary.rows / usage.wall_s,
        "image_status": summary.image_status_counts,
        **usage.as_dict(),
    }


def start_ray() -> float:
    """Start (or join) Ray now, so that its start-up is not counted in a run; its seconds."""
    from rakuten_ray.ray_session import ensure_ray

    started = time.perf_counter()
    ensure_ray()
    return time.perf_counter() - started
