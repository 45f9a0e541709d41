"""Incremental rescoring against a full rescore, with a tenth of the rows changed.

A catalogue is scored once (the previous output); then a tenth of its titles are edited and
the new catalogue is scored twice in one run of this script: in full, and with
``--previous``, which carries the unchanged rows over. Both outputs must be equal; the
ratio of the two scoring times is the speed-up.

    PYTHONPATH=. python benchmarks/incremental.py --rows 2000 --engine local
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from common import (
    base_parser,
    demo_catalogue,
    ensure_bundle,
    format_table,
    load_line,
    machine,
    write_results,
)

#: One row in this many is edited in the new catalogue.
CHANGED_EVERY = 10


def _timed(bundle: Path, source: Path, images: Path, out: Path, engine: str, **options) -> dict:
    from rakuten_ray.scoring.run import run_scoring

    started = time.perf_counter()
    summary = run_scoring(bundle, source, images, out, engine=engine, overwrite=True, **options)
    return {
        "wall_s": time.perf_counter() - started,
        "rows_scored_now": summary.rows_scored_now,
        "rows_carried_over": summary.rows_carried_over,
        "phase_seconds": summary.phase_seconds,
    }


def main() -> None:
    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--engine", choices=["local", "ray"], default="local")
    args = parser.parse_args()
    bundle = ensure_bundle(args.bundle)
    source, images = demo_catalogue(args.workdir, args.rows)
    work = args.workdir / f"incremental-{args.rows}-{args.engine}"
    work.mkdir(parents=True, exist_ok=True)
    changed = pd.read_csv(source, index_col=0, dtype=str, keep_default_na=False)
    edited = changed.index[::CHANGED_EVERY]
    changed.loc[edited, "designation"] = changed.loc[edited, "designation"] + " (nouveau)"
    changed.to_csv(work / "changed.csv")
    if args.engine == "ray":
        from common import start_ray

        start_ray()
    before = machine()
    _timed(bundle, source, images, work / "previous", args.engine)
    full = _timed(bundle, work / "changed.csv", images, work / "full", args.engine)
    incremental = _timed(
        bundle, work / "changed.csv", images, work / "incremental", args.engine,
        previous=work / "previous",
    )  # fmt: skip
    read = [
        pd.read_parquet(work / name / "predictions").sort_values("row").reset_index(drop=True)
        for name in ("full", "incremental")
    ]
    pd.testing.assert_frame_equal(*read, check_exact=True, check_dtype=False)
    speedup = full["wall_s"] / incremental["wall_s"]
    payload = {
        "machine_before": before, "machine_after": machine(), "rows": args.rows,
        "engine": args.engine, "changed_rows": len(edited), "full": full,
        "incremental": incremental, "speedup": speedup, "outputs_equal": True,
    }  # fmt: skip
    rows = [
        ["full rescore", full["rows_scored_now"], 0, full["wall_s"]],
        ["--previous", incremental["rows_scored_now"], incremental["rows_carried_over"],
         incremental["wall_s"]],
    ]  # fmt: skip
    print(format_table(["run", "rows scored", "rows carried over", "wall s"], rows))
    print(f"speed-up with {len(edited)} of {args.rows} rows changed: {speedup:.2f}x")
    print(load_line(payload))
    write_results(f"incremental_{args.engine}", payload)


if __name__ == "__main__":
    main()
