"""Evaluating predictions against labels: metrics, per-class report, plots, a one-page report."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from rakuten_ray.catalog import (
    CATEGORY_NAMES,
    CLASS_CODES,
    SchemaError,
    codes_to_indices,
    read_labels,
)
from rakuten_ray.fusion.calibration import apply_temperature
from rakuten_ray.layout import FINAL_PROBS, INDEX_COLUMN, ImageStatus, RunLayout, ScoringLayout
from rakuten_ray.metrics import classification_summary, reliability_curve, softmax, weighted_f1
from rakuten_ray.training.report import TrainingReport


def _save(fig: Figure, path: Path) -> Path:
    # Figure objects render without pyplot, so no display backend is ever needed.
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, path: Path) -> Path:
    """Row-normalised confusion matrix over the 27 codes."""
    matrix = confusion_matrix(y_true, y_pred, labels=np.arange(len(CLASS_CODES))).astype(float)
    matrix /= np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)
    fig = Figure(figsize=(9, 8))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(CLASS_CODES))
    ax.set_xticks(ticks, [str(c) for c in CLASS_CODES], rotation=90, fontsize=7)
    ax.set_yticks(ticks, [str(c) for c in CLASS_CODES], fontsize=7)
    ax.set_xlabel("predicted prdtypecode")
    ax.set_ylabel("true prdtypecode")
    ax.set_title("Confusion matrix (share of each true class)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    return _save(fig, path)


def plot_reliability(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path
) -> Path:
    """Reliability diagrams (accuracy against confidence), one line per named probability set."""
    fig = Figure(figsize=(5, 5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect")
    for label, (probs, y_idx) in curves.items():
        curve = reliability_curve(probs, y_idx)
        filled = curve.count > 0
        ax.plot(curve.confidence[filled], curve.accuracy[filled], marker="o", label=label)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def per_class_report(y_true: np.ndarray, y_pred: np.ndarray) -> pd.DataFrame:
    """Precision, recall, F1 and support per code, with the French category name."""
    labels = np.arange(len(CLASS_CODES))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    return pd.DataFrame(
        {
            "prdtypecode": CLASS_CODES,
            "category": [CATEGORY_NAMES[c] for c in CLASS_CODES],
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
        }
    )


def calibration_curves(run_dir: Path) -> dict[str, Any]:
    """Before/after-temperature probabilities of each base model on a run's held-out rows."""
    run = RunLayout(run_dir)
    labels = pd.read_parquet(run.heldout_labels)["label"]
    report = TrainingReport.load(run.metrics)
    curves = {}
    for name, model in report.base_models.items():
        temperature = model.calibration.temperature
        scores = pd.read_parquet(run.heldout_scores(name))
        y_idx = labels.loc[scores.index].to_numpy()
        logits = scores.to_numpy(dtype=np.float64)
        curves[name] = {
            "before (T=1)": (softmax(logits), y_idx),
            f"after (T={temperature:.2f})": (apply_temperature(logits, temperature), y_idx),
        }
    return curves


@dataclass(frozen=True)
class Evaluation:
    """Metrics, per-class table and figures (PNG files by caption) of one evaluation."""

    metrics: dict[str, Any]
    per_class: pd.DataFrame
    figures: dict[str, Path]


def compute_evaluation(
    predictions: Path, labels_csv: Path, out_dir: Path, run_dir: Path | None = None
) -> Evaluation:
    """Join predictions with labels; write ``metrics.json``, ``per_class.csv`` and plots.

    Args:
        predictions: a scoring output folder (holding ``predictions/``) or the Parquet folder.
        labels_csv: a Y file (unnamed index, ``prdtypecode``); joined on the ``index`` column.
        out_dir: report folder.
        run_dir: optional training run, for before/after calibration diagrams of its models.
    """
    table = pd.read_parquet(ScoringLayout(predictions).parquet_dir())
    labels = read_labels(labels_csv)
    table = table[table[INDEX_COLUMN].isin(labels.index)]
    if table.empty:
        raise SchemaError(f"{labels_csv}: no label matches a predicted row's index")
    y_true = codes_to_indices(labels.loc[table[INDEX_COLUMN].to_numpy()].to_numpy())
    probs = table[FINAL_PROBS].to_numpy(dtype=np.float64)
    y_pred = probs.argmax(axis=1)
    with_image = (table["image_status"] == ImageStatus.OK.value).to_numpy()
    out_dir.mkdir(parents=True, exist_ok=True)
    text_codes = codes_to_indices(table["text_prdtypecode"].to_numpy())
    metrics: dict[str, Any] = {
        "final": classification_summary(probs, y_true),
        "rows_with_image": int(with_image.sum()),
        "rows_without_image": int((~with_image).sum()),
        "text_label_weighted_f1": weighted_f1(y_true, text_codes),
    }
    if with_image.any():
        image_codes = table["image_prdtypecode"].to_numpy()[with_image].astype(np.int64)
        metrics["final_rows_with_image"] = classification_summary(
            probs[with_image], y_true[with_image]
        )
        metrics["image_label_weighted_f1_rows_with_image"] = weighted_f1(
            y_true[with_image], codes_to_indices(image_codes)
        )
    per_class = per_class_report(y_true, y_pred)
    per_class.to_csv(out_dir / "per_class.csv", index=False)
    figures = {
        "Confusion matrix": plot_confusion(y_true, y_pred, out_dir / "confusion_matrix.png"),
        "Reliability of the final probabilities": plot_reliability(
            {"final": (probs, y_true)}, "Final probabilities", out_dir / "reliability_final.png"
        ),
    }
    if run_dir is not None:
        for name, curves in calibration_curves(run_dir).items():
            caption = f"Reliability of {name} before and after temperature scaling"
            figures[caption] = plot_reliability(curves, name, out_dir / f"reliability_{name}.png")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return Evaluation(metrics=metrics, per_class=per_class, figures=figures)


def evaluate_predictions(
    predictions: Path, labels_csv: Path, out_dir: Path, run_dir: Path | None = None
) -> dict[str, Any]:
    """:func:`compute_evaluation`, then ``index.html``; returns the metrics."""
    evaluation = compute_evaluation(predictions, labels_csv, out_dir, run_dir)
    write_html_report(out_dir / "index.html", "Evaluation", evaluation)
    return evaluation.metrics


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def write_html_report(
    path: Path, title: str, evaluation: Evaluation, sections: list[str] | None = None
) -> Path:
    """A self-contained page (images inlined) with metrics, extra sections and figures."""
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
        "text-align:right}th{background:#f2f2f2}td:first-child,td:nth-child(2){text-align:left}"
        "figure{display:inline-block;margin:1em}img{max-width:520px}"
    )
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
    ]
    parts.append(f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>")
    parts.extend(sections or [])
    metrics = html.escape(json.dumps(evaluation.metrics, indent=1))
    parts.append(f"<h2>Metrics</h2><pre>{metrics}</pre>")
    parts.append("<h2>Per-class F1</h2>")
    parts.append(evaluation.per_class.to_html(index=False, float_format=lambda v: f"{v:.3f}"))
    parts.append("<h2>Figures</h2>")
    for caption, figure in evaluation.figures.items():
        parts.append(
            f"<figure>{_img(figure)}<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
