"""The scoring driver's peak memory as the input grows: it should hold nothing per row.

Each size runs ``run_scoring`` with the Ray engine in a fresh process (its own local Ray) on
synthetic rows in Parquet files, with a light bundle (the TF-IDF model alone, no image
model), and records that process's peak resident memory (``VmHWM``: the driver alone, not
the Ray workers) and its rows per second. The ratio of the largest size's peak to the
smallest's is what the driver keeps per row: 1.0 when nothing.

    PYTHONPATH=. python benchmarks/driver_memory.py --rows 100000 1000000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import yaml
from common import CACHE, REPO, format_table, load_line, machine, write_results

#: The light bundle: the demo config's TF-IDF model alone.
TFIDF_BUNDLE = CACHE / "tfidf" / "run" / "bundle"
#: Rows per input Parquet file (the benchmark writes its inputs a file at a time).
ROWS_PER_FILE = 100_000


def tfidf_bundle() -> Path:
    """The light bundle, trained once on a small synthetic catalogue."""
    if TFIDF_BUNDLE.is_dir():
        return TFIDF_BUNDLE
    from rakuten_ray.config import load_config
    from rakuten_ray.demo import DEMO_CONFIG
    from rakuten_ray.ray_session import ensure_ray
    from rakuten_ray.synthetic import generate_catalogue
    from rakuten_ray.training.protocol import run_training

    config = load_config(DEMO_CONFIG).to_dict()
    config["text_models"] = [m for m in config["text_models"] if m["kind"] == "tfidf_svm"]
    config["image_models"] = []
    root = TFIDF_BUNDLE.parent.parent
    (root / "config.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    generate_catalogue(root / "data", rows=600, test_rows=27, seed=1)
    ensure_ray()
    run_training(load_config(root / "config.yaml"), root / "data", root / "run")
    return TFIDF_BUNDLE


def synthetic_input(rows: int, folder: Path) -> Path:
    """``rows`` products (the demo catalogue's texts, cycled; distinct ids) in Parquet files."""
    if folder.is_dir():
        return folder
    texts = pd.read_csv(TFIDF_BUNDLE.parent.parent / "data" / "X_train_update.csv", index_col=0)
    texts = texts[["designation", "description"]].fillna("")
    partial = folder.with_name(folder.name + ".tmp")
    partial.mkdir(parents=True, exist_ok=True)
    for start in range(0, rows, ROWS_PER_FILE):
        ids = pd.RangeIndex(start, min(rows, start + ROWS_PER_FILE))
        frame = texts.iloc[ids % len(texts)].reset_index(drop=True)
        # A row number in the title keeps every row's text distinct, as a catalogue's is.
        frame["designation"] = frame["designation"] + " n" + pd.Series(ids).astype(str)
        frame.insert(0, "index", ids)
        frame["productid"], frame["imageid"] = ids + 10**9, ids + 10**9
        frame.to_parquet(partial / f"part-{start:09d}.parquet", index=False)
    partial.rename(folder)
    return folder


def _status_mib(field: str) -> float:
    """A memory field of this process's ``/proc/self/status``, in MiB."""
    status = Path("/proc/self/status").read_text()
    return int(next(x for x in status.splitlines() if x.startswith(field)).split()[1]) / 1024


class RssSampler(threading.Thread):
    """Samples this process's resident memory every half second: when the peak came, and
    the largest RSS seen in each phase of the run."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()
        self.start()

    def run(self) -> None:
        started = time.perf_counter()
        while not self.done.wait(0.5):
            self.samples.append((time.perf_counter() - started, _status_mib("VmRSS")))

    def by_phase(self, phase_seconds: dict[str, float]) -> dict[str, float]:
        """The largest sampled RSS within each phase, phases taken one after another."""
        self.done.set()
        peaks, start = {}, 0.0
        for phase, seconds in phase_seconds.items():
            inside = [rss for t, rss in self.samples if start <= t < start + seconds]
            if inside:
                peaks[phase] = max(inside)
            start += seconds
        return peaks


def child(source: Path, out: Path) -> None:
    """One run, in this process: print its summary and this process's peak RSS as JSON."""
    from rakuten_ray.scoring.run import run_scoring

    images = out.parent / "no_images"
    images.mkdir(exist_ok=True)
    sampler = RssSampler()
    started = time.perf_counter()
    summary = run_scoring(TFIDF_BUNDLE, source, images, out, engine="ray", overwrite=True)
    wall = time.perf_counter() - started
    result = {
        "rows": summary.rows, "wall_s": wall, "peak_rss_mib": _status_mib("VmHWM"),
        "rss_mib_by_phase": sampler.by_phase(summary.phase_seconds),
    }  # fmt: skip
    print("RESULT " + json.dumps({**result, "rows_per_s": summary.rows / wall}))


def measure(rows: int, workdir: Path) -> dict:
    source = synthetic_input(rows, workdir / f"input-{rows}")
    command = [sys.executable, __file__, "--child", str(source), str(workdir / f"out-{rows}")]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"{rows:,} rows: the run failed:\n{done.stderr[-4000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--workdir", type=Path, default=CACHE / "driver_memory")
    parser.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    tfidf_bundle()
    before = machine()
    runs = [measure(rows, args.workdir) for rows in sorted(args.rows)]
    ratio = runs[-1]["peak_rss_mib"] / runs[0]["peak_rss_mib"]
    payload = {
        "machine_before": before, "machine_after": machine(), "runs": runs,
        "peak_rss_ratio": ratio,
    }  # fmt: skip
    rows = [
        [r["rows"], r["peak_rss_mib"], max(r["rss_mib_by_phase"], key=r["rss_mib_by_phase"].get),
         r["wall_s"], r["rows_per_s"]]
        for r in runs
    ]  # fmt: skip
    headers = ["rows", "driver peak RSS MiB", "sampled peak in", "wall s", "rows/s"]
    print(format_table(headers, rows))
    print(f"peak RSS ratio, {runs[-1]['rows']:,} to {runs[0]['rows']:,} rows: {ratio:.3f}")
    print(load_line(payload))
    write_results("driver_memory", payload)


if __name__ == "__main__":
    main()
