"""CPU runtime: PyTorch against the bundle's ONNX Runtime exports, and the two engines.

One script, one run, the same real rows (texts from the sample's CSVs, the sample's test
images) and the same bundle:

1. each model stage alone in this process, on PyTorch and on the exports (``runtime``
   ``torch`` and ``auto``), with the threads its ``scoring`` entry gives;
2. the in-process engine on PyTorch, then on the exports, then on the exports with its
   stages one after another (``scoring.overlap_stages: false``);
3. the Ray Data engine on the exports.

With ``--baseline CHECKOUT --baseline-bundle B``, the in-process engine of an earlier
checkout of this repository (its own stages, before the exports and the image preparation
stage) also scores the same rows, in a subprocess that imports that checkout, with a bundle
it trained: the PyTorch stages as they were.

Then the targets: the in-process engine on the exports at least 2x its rows/s on PyTorch,
the Ray engine at least 0.95x the in-process one, and the two engines' predictions identical
byte for byte (every column, every row); how far PyTorch's predictions are from the
exports' is reported beside them.

    .venv/bin/python -u benchmarks/cpu_runtime.py --bundle demo_run/run/bundle [--rows 600] \
        [--baseline ../before --baseline-bundle ../before/demo_run/run/bundle]

Writes ``benchmarks/results/cpu_runtime.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import (
    base_parser,
    cpu_ms_per_row,
    ensure_bundle,
    format_table,
    load_line,
    machine,
    real_catalogue,
    scored_run,
    start_ray,
    write_results,
)
from scoring_throughput import Dataset, normalised_rows, time_stage

from rakuten_ray.bundle import open_bundle
from rakuten_ray.layout import FINAL_PROBS, ROW_COLUMN
from rakuten_ray.scoring.stages import ImagePrepStage, ImageStage, TextStage

#: The overrides that put both model stages on PyTorch.
ON_TORCH = ("scoring.text.runtime=torch", "scoring.image.runtime=torch")
RUNTIMES = {"torch": ON_TORCH, "onnx": ()}
#: The in-process engine's stages one after another, as before they overlapped.
SEQUENTIAL = ("scoring.overlap_stages=false",)
SPEEDUP_TARGET = 2.0
RAY_VS_LOCAL_TARGET = 0.95


def predictions(out: Path) -> pd.DataFrame:
    """An output folder's predictions, in row order."""
    files = sorted((out / "predictions").glob("*.parquet"))
    frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    return frame.sort_values(ROW_COLUMN, kind="stable").reset_index(drop=True)


def stages_alone(bundle: Path, dataset: Dataset, rows: pd.DataFrame) -> dict[str, Any]:
    """The text and image model stages alone on each runtime (image preparation once, on its
    own: it runs no model)."""
    scoring = open_bundle(bundle).scoring()
    prep = ImagePrepStage(str(bundle), str(dataset.image_dir), scoring.image_prep)
    prepared, timings = time_stage(prep, rows, scoring.image_prep.batch_size)
    out: dict[str, Any] = {"image_prep": timings}
    for runtime in RUNTIMES:
        chosen = "auto" if runtime == "onnx" else "torch"
        text = TextStage(str(bundle), scoring.text.model_copy(update={"runtime": chosen}))
        image = ImageStage(str(bundle), scoring.image.model_copy(update={"runtime": chosen}))
        out[f"text_{runtime}"] = time_stage(text, rows, scoring.text.batch_size)[1]
        out[f"image_{runtime}"] = time_stage(image, prepared, scoring.image.batch_size)[1]
    return out


#: Run in the subprocess that imports the earlier checkout: one in-process scoring run, timed
#: as ``scored_run`` times one here.
BASELINE_RUN = """
import json, sys, time
from pathlib import Path
from rakuten_ray.scoring.run import run_scoring
bundle, source, images, out = map(Path, sys.argv[1:5])
started = time.perf_counter()
summary = run_scoring(bundle, source, images, out, engine="local", overwrite=True)
wall = time.perf_counter() - started
print(json.dumps({"rows": summary.rows, "wall_s": wall, "rows_per_s": summary.rows / wall}))
"""


def baseline_run(checkout: Path, bundle: Path, source: Path, image_dir: Path, out: Path) -> dict:
    """The in-process engine of ``checkout`` on ``source``, in a subprocess importing it."""
    env = {**os.environ, "PYTHONPATH": str(checkout.resolve())}
    args = [sys.executable, "-c", BASELINE_RUN, str(bundle), str(source), str(image_dir), str(out)]
    done = subprocess.run(args, env=env, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return {**result, "checkout": str(checkout), "bundle": str(bundle)}


def compare(first: pd.DataFrame, second: pd.DataFrame) -> dict[str, Any]:
    """Whether two runs' predictions are identical, and how far apart they are if not."""
    probs_a, probs_b = (f[FINAL_PROBS].to_numpy() for f in (first, second))
    return {
        "identical": bool(first.equals(second)),
        "label_agreement": float(np.mean(first["prdtypecode"] == second["prdtypecode"])),
        "max_prob_diff": float(np.abs(probs_a - probs_b).max()),
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600, help="rows scored in each run")
    parser.add_argument("--baseline", type=Path, help="an earlier checkout to time as well")
    parser.add_argument("--baseline-bundle", type=Path, help="a bundle that checkout trained")
    parser.add_argument(
        "--engines-only", action="store_true",
        help="only the two engines on the exports (for larger row counts)",
    )  # fmt: skip
    args = parser.parse_args()
    runtimes = {"onnx": ()} if args.engines_only else RUNTIMES
    bundle = ensure_bundle(args.bundle)
    source = real_catalogue(args.sample, args.workdir, args.rows)
    dataset = Dataset("real_test_images", source, args.sample / "images" / "image_test")
    payload: dict[str, Any] = {"bundle": str(bundle), "rows": args.rows}
    payload["machine_before"] = machine()
    exports = open_bundle(bundle).manifest["metrics"].get("runtimes", {})
    payload["exports"] = exports
    print(f"[bench] exports in the bundle: {sorted(exports) or 'none'}")
    # In-process measurements first, while no Ray daemon competes for the CPUs.
    payload["stages"] = {}
    if not args.engines_only:
        print("[bench] stages alone on each runtime")
        payload["stages"] = stages_alone(bundle, dataset, normalised_rows(dataset, args.workdir))
    runs: dict[str, Any] = {}
    for runtime, overrides in runtimes.items():
        print(f"[bench] in-process engine, {runtime}")
        out = args.workdir / f"out-local-{runtime}"
        runs[f"local_{runtime}"] = scored_run(bundle, source, dataset.image_dir, out, "local",
                                              overrides)  # fmt: skip
    print("[bench] in-process engine, onnx, stages one after another")
    runs["local_onnx_sequential"] = scored_run(
        bundle, source, dataset.image_dir, args.workdir / "out-local-onnx-sequential", "local",
        SEQUENTIAL,
    )  # fmt: skip
    if args.baseline:
        print(f"[bench] in-process engine of {args.baseline}")
        payload["baseline"] = baseline_run(
            args.baseline, args.baseline_bundle, source, dataset.image_dir,
            args.workdir / "out-baseline",
        )  # fmt: skip
    payload["ray_start_s"] = round(start_ray(), 3)
    print("[bench] Ray engine, onnx")
    runs["ray_onnx"] = scored_run(
        bundle, source, dataset.image_dir, args.workdir / "out-ray-onnx", "ray"
    )
    payload["machine_after"] = machine()
    payload["engines"] = runs
    outs = {name: predictions(args.workdir / f"out-{name.replace('_', '-')}") for name in runs}
    payload["agreement"] = {
        "ray_onnx_vs_local_onnx": compare(outs["local_onnx"], outs["ray_onnx"]),
        "local_onnx_vs_sequential": compare(outs["local_onnx"], outs["local_onnx_sequential"]),
    }
    ratios = payload["ratios"] = {
        "ray_vs_local_onnx": round(
            runs["ray_onnx"]["rows_per_s"] / runs["local_onnx"]["rows_per_s"], 3
        ),
        "overlapping_vs_sequential_local": round(
            runs["local_onnx"]["rows_per_s"] / runs["local_onnx_sequential"]["rows_per_s"], 3
        ),
    }
    if "local_torch" in runs:
        payload["agreement"]["local_torch_vs_local_onnx"] = compare(
            outs["local_onnx"], outs["local_torch"]
        )
        ratios["onnx_vs_torch_local"] = round(
            runs["local_onnx"]["rows_per_s"] / runs["local_torch"]["rows_per_s"], 3
        )

    header = ["what", "wall s", "rows/s", "CPU ms/row", "CPU/wall", "peak MiB"]
    table = [
        [name, t["wall_s"], t["rows_per_s"], cpu_ms_per_row(t, args.rows), t["cpu_per_wall"],
         t["peak_total_mib"]]
        for name, t in [*payload["stages"].items(), *runs.items()]
    ]  # fmt: skip
    if "baseline" in payload:
        base = payload["baseline"]
        table.append(["local_baseline", base["wall_s"], base["rows_per_s"], None, None, None])
        ratios["onnx_vs_baseline_local"] = round(
            runs["local_onnx"]["rows_per_s"] / base["rows_per_s"], 3
        )
    print(format_table(header, table))
    if "onnx_vs_torch_local" in ratios:
        print(f"  in-process, exports / PyTorch: {ratios['onnx_vs_torch_local']:.3f} "
              f"(target >= {SPEEDUP_TARGET})")  # fmt: skip
    print(f"  in-process, stages side by side / one after another: "
          f"{ratios['overlapping_vs_sequential_local']:.3f}")  # fmt: skip
    print(f"  Ray / in-process, exports: {ratios['ray_vs_local_onnx']:.3f} "
          f"(target >= {RAY_VS_LOCAL_TARGET})")  # fmt: skip
    if "onnx_vs_baseline_local" in ratios:
        print(f"  in-process, exports / the earlier checkout's PyTorch stages: "
              f"{ratios['onnx_vs_baseline_local']:.3f} (target >= {SPEEDUP_TARGET})")  # fmt: skip
    for name, values in payload["agreement"].items():
        print(f"  {name}: {values}")
    print(load_line(payload))
    write_results(f"cpu_runtime_engines_{args.rows}" if args.engines_only else "cpu_runtime",
                  payload)  # fmt: skip


if __name__ == "__main__":
    main()
