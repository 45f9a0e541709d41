"""Review routing and the audit on real rows no model ever saw.

``prepare`` keeps a stratified share of the Rakuten sample's labelled rows apart (``--fraction``,
15% by default) and writes the rest as a catalogue to train on (the image-only rows and the
image folder stay as they are: the kept rows' images are simply never read in training).
After ``rakuten-ray train`` on that catalogue, ``measure`` scores the kept rows with the bundle
(in-process engine) and reports

- the review routing on them: the share of rows decided ``auto`` and the precision of those,
  against the target and the run's own cross-fitted estimate (``RUN/metrics.json``), overall
  and on each scoring path (rows with a usable image, rows without), each precision with its
  Wilson 95% interval and row count; the same for a stricter policy that also sends every row
  whose text and image models name different codes to review (``disagreeing to review``);
- the audit: a share of the kept rows' labels (``--changed``, 5%) is changed to another code
  at random, ``run_audit`` ranks the disputes, and the recall of the changed rows in its top k
  is given for k = 1x and 2x the number changed;
- the evaluation page of the kept rows (``OUT/report/index.html``).

    .venv/bin/python benchmarks/routing_and_audit.py prepare --out WORK/data
    rakuten-ray train --config configs/demo.yaml --data WORK/data --out WORK/run
    .venv/bin/python benchmarks/routing_and_audit.py measure --run WORK/run --data WORK/data \
        --out WORK/measure

Writes ``benchmarks/results/routing_and_audit.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from common import SAMPLE, format_table, write_results

from rakuten_ray.audit import run_audit
from rakuten_ray.catalog import CLASS_CODES, X_TRAIN_FILE, Y_TRAIN_FILE, read_labels
from rakuten_ray.evaluation import evaluate_predictions
from rakuten_ray.fusion.routing import routing_estimate
from rakuten_ray.layout import ImageStatus
from rakuten_ray.scoring.run import run_scoring
from rakuten_ray.splits import stratified_splits
from rakuten_ray.training.data import X_IMAGES_ONLY_FILE, Y_IMAGES_ONLY_FILE
from rakuten_ray.training.report import TrainingReport

KEPT_X = "kept_X.csv"
KEPT_Y = "kept_Y.csv"
SEED = 7


def prepare(sample: Path, out: Path, fraction: float) -> None:
    """The training catalogue without the kept rows, and the kept rows' X and Y files."""
    labels = read_labels(sample / Y_TRAIN_FILE)
    # Only the split's internal-test part is used: its rows are the ones kept apart.
    kept = stratified_splits(labels, seed=SEED, test_fraction=fraction).test
    products = pd.read_csv(sample / X_TRAIN_FILE, index_col=0, dtype=str, keep_default_na=False)
    out.mkdir(parents=True, exist_ok=True)
    is_kept = products.index.astype(np.int64).isin(kept)
    products[~is_kept].to_csv(out / X_TRAIN_FILE)
    labels[~labels.index.isin(kept)].rename_axis(None).to_csv(out / Y_TRAIN_FILE)
    products[is_kept].to_csv(out / KEPT_X)
    labels[labels.index.isin(kept)].rename_axis(None).to_csv(out / KEPT_Y)
    for name in (X_IMAGES_ONLY_FILE, Y_IMAGES_ONLY_FILE):
        shutil.copy(sample / name, out / name)
    if not (out / "images").exists():
        os.symlink((sample / "images").resolve(), out / "images")
    print(f"kept {is_kept.sum()} labelled rows apart; training catalogue: {(~is_kept).sum()} "
          f"rows, in {out}")  # fmt: skip


def change_labels(labels: pd.Series, share: float, seed: int) -> tuple[pd.Series, pd.Index]:
    """``share`` of the labels moved to another code at random; the rows changed."""
    rng = np.random.default_rng(seed)
    chosen = labels.index[rng.choice(len(labels), round(share * len(labels)), replace=False)]
    changed = labels.copy()
    for row in chosen:
        others = [c for c in CLASS_CODES if c != labels[row]]
        changed[row] = others[rng.integers(len(others))]
    return changed, chosen


def routing_by_path(predictions: pd.DataFrame, right: np.ndarray) -> dict[str, Any]:
    """Auto share and precision of the bundle's policy and of the stricter one, per path."""
    has_image = (predictions["image_status"] == ImageStatus.OK.value).to_numpy()
    image_codes = predictions["image_prdtypecode"].to_numpy(dtype=np.float64, na_value=np.nan)
    disagree = has_image & (predictions["text_prdtypecode"].to_numpy() != image_codes)
    auto = (predictions["decision"] == "auto").to_numpy()
    paths = {
        "all": np.ones(len(auto), dtype=bool),
        "with_image": has_image,
        "text_only": ~has_image,
        "with_image_disagreeing": disagree,
    }
    policies = {"thresholds": auto, "disagreeing_to_review": auto & ~disagree}
    return {
        policy: {path: routing_estimate(chosen[rows], right[rows]) for path, rows in paths.items()}
        for policy, chosen in policies.items()
    }


def measure(run: Path, data: Path, out: Path, share: float) -> dict[str, Any]:
    """Score the kept rows, check the routing on them, audit changed labels."""
    scored = out / "scored"
    # Most kept rows have no image in the sample (as in training): scored from their text.
    run_scoring(run / "bundle", data / KEPT_X, data / "images" / "image_train", scored,
                engine="local", overwrite=True, allow_missing_images=True)  # fmt: skip
    metrics = evaluate_predictions(scored, data / KEPT_Y, out / "report", run)
    truth = read_labels(data / KEPT_Y)
    predictions = pd.read_parquet(scored / "predictions")
    right = predictions["prdtypecode"].to_numpy() == truth.loc[predictions["index"]].to_numpy()
    auto = (predictions["decision"] == "auto").to_numpy()
    estimate = TrainingReport.load(run / "metrics.json").routing
    routing = {
        "rows": len(predictions),
        "accuracy": round(float(right.mean()), 4),
        "coverage": round(float(auto.mean()), 4),
        "precision_of_auto": round(float(right[auto].mean()), 4) if auto.any() else None,
        "target_precision": estimate.target_precision,
        "estimate_cross_fitted": dataclasses.asdict(estimate.expected),
        "estimate_internal_test": dataclasses.asdict(estimate.expected_internal_test),
        "estimate_per_path": {
            path: dataclasses.asdict(values) for path, values in estimate.expected_per_path.items()
        },
        "thresholds": estimate.thresholds,
        "by_path": routing_by_path(predictions, right),
        "weighted_f1": metrics["final"]["weighted_f1"],
    }
    current, changed = change_labels(truth, share, SEED)
    labels_csv = out / "current_labels.csv"
    current.rename_axis(None).to_csv(labels_csv)
    audit = out / "audit"
    run_audit(scored, labels_csv, audit, image_dir=data / "images" / "image_train",
              products_csv=data / KEPT_X, overwrite=True)  # fmt: skip
    suspects = pd.read_parquet(audit / "suspects.parquet")
    n = len(changed)
    recall = {f"top_{k}": round(float(suspects.head(k)["index"].isin(changed).sum() / n), 4)
              for k in (n, 2 * n)}  # fmt: skip
    return {"routing": routing, "audit": {"changed": n, "suspects": len(suspects), **recall}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prep = commands.add_parser("prepare")
    prep.add_argument("--sample", type=Path, default=SAMPLE)
    prep.add_argument("--out", type=Path, required=True)
    prep.add_argument("--fraction", type=float, default=0.15)
    meas = commands.add_parser("measure")
    meas.add_argument("--run", type=Path, required=True)
    meas.add_argument("--data", type=Path, required=True)
    meas.add_argument("--out", type=Path, required=True)
    meas.add_argument("--changed", type=float, default=0.05, help="share of labels changed")
    args = parser.parse_args()
    if args.command == "prepare":
        prepare(args.sample, args.out, args.fraction)
        return
    result = measure(args.run, args.data, args.out, args.changed)
    r, a = result["routing"], result["audit"]
    print(format_table(
        ["rows", "accuracy", "auto share", "precision of auto", "target", "F1"],
        [[r["rows"], r["accuracy"], r["coverage"], r["precision_of_auto"],
          r["target_precision"], r["weighted_f1"]]],
    ))  # fmt: skip
    print(format_table(
        ["policy", "path", "rows", "auto rows", "auto share", "precision", "95% interval"],
        [[policy, path, e["rows"], e["auto_rows"], e["coverage"], e["precision"],
          "{:.3f} to {:.3f}".format(*e["precision_interval"])]
         for policy, paths in r["by_path"].items() for path, e in paths.items()],
    ))  # fmt: skip
    n = a["changed"]
    print(f"audit: {n} labels changed; recall in the top {n}: {a[f'top_{n}']}, "
          f"in the top {2 * n}: {a[f'top_{2 * n}']}")
    write_results("routing_and_audit", result)


if __name__ == "__main__":
    main()
