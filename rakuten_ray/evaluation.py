"""Evaluating predictions against labels: metrics, per-class table, figures and a page that a
reader would choose over the JSON (headline numbers first, then the figures that explain
them)."""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import precision_recall_fscore_support

from rakuten_ray.catalog import (
    CATEGORY_NAMES,
    CLASS_CODES,
    SchemaError,
    codes_to_indices,
    read_labels,
)
from rakuten_ray.fusion.calibration import apply_temperature
from rakuten_ray.fusion.routing import AUTO, coverage_precision_curve
from rakuten_ray.layout import FINAL_PROBS, INDEX_COLUMN, ImageStatus, RunLayout, ScoringLayout
from rakuten_ray.metrics import classification_summary, softmax, weighted_f1
from rakuten_ray.plots import (
    plot_confusion,
    plot_coverage_precision,
    plot_modalities,
    plot_per_class_f1,
    plot_reliability,
)
from rakuten_ray.training.report import TrainingReport


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


def _out_of_fold_temperature(
    logits: np.ndarray, folds: np.ndarray, temperatures: dict[str, float]
) -> np.ndarray:
    """Each row scaled by the temperature fitted without its fold."""
    probs = np.empty_like(logits)
    for fold in np.unique(folds):
        rows = folds == fold
        probs[rows] = apply_temperature(logits[rows], temperatures[str(int(fold))])
    return probs


def calibration_curves(run_dir: Path) -> dict[str, Any]:
    """Before/after-temperature probabilities of each base model on a run's held-out rows;
    after, each row under the temperature fitted without its fold where the run recorded
    them (runs before cross-fitted temperatures: the bundle's)."""
    run = RunLayout(run_dir)
    heldout = pd.read_parquet(run.heldout_labels)
    report = TrainingReport.load(run.metrics)
    curves = {}
    for name, model in report.base_models.items():
        calibration = model.calibration
        scores = pd.read_parquet(run.heldout_scores(name))
        y_idx = heldout["label"].loc[scores.index].to_numpy()
        logits = scores.to_numpy(dtype=np.float64)
        if calibration.fold_temperatures and "fold" in heldout:
            folds = heldout["fold"].loc[scores.index].to_numpy()
            after = _out_of_fold_temperature(logits, folds, calibration.fold_temperatures)
            label = "after (T fitted without each row's fold)"
        else:
            after = apply_temperature(logits, calibration.temperature)
            label = f"after (T={calibration.temperature:.2f})"
        curves[name] = {"before (T=1)": (softmax(logits), y_idx), label: (after, y_idx)}
    return curves


@dataclass(frozen=True)
class Evaluation:
    """Metrics, per-class table, figures and the training run's report, if one was given."""

    metrics: dict[str, Any]
    per_class: pd.DataFrame
    #: Figure files by section, then by caption.
    figures: dict[str, dict[str, Path]] = field(default_factory=dict)
    run: TrainingReport | None = None


def _routing_metrics(table: pd.DataFrame, correct: np.ndarray) -> dict[str, Any] | None:
    """Coverage and precision of the bundle's automatic decisions on these rows."""
    if "decision" not in table.columns:
        return None
    auto = (table["decision"] == AUTO).to_numpy()
    reasons = table.loc[~auto, "review_reason"].value_counts().sort_index()
    return {
        "auto_rows": int(auto.sum()),
        "coverage": float(auto.mean()),
        "precision": float(correct[auto].mean()) if auto.any() else None,
        "review_reasons": {str(k): int(v) for k, v in reasons.items()},
    }


def compute_evaluation(
    predictions: Path, labels_csv: Path, out_dir: Path, run_dir: Path | None = None
) -> Evaluation:
    """Join predictions with labels; write ``metrics.json``, ``per_class.csv`` and figures.

    Args:
        predictions: a scoring output folder (holding ``predictions/``) or the Parquet folder.
        labels_csv: a Y file (unnamed index, ``prdtypecode``); joined on the ``index`` column.
        out_dir: report folder.
        run_dir: the bundle's training run: adds the calibration diagrams of its models, its
            held-out coverage-precision curve and its review thresholds.

    Raises:
        SchemaError: the labels are unreadable or match no predicted row.
    """
    table = pd.read_parquet(ScoringLayout(predictions).parquet_dir())
    labels = read_labels(labels_csv)
    table = table[table[INDEX_COLUMN].isin(labels.index)]
    if table.empty:
        raise SchemaError(f"{labels_csv}: no label matches a predicted row's index")
    run = TrainingReport.load(RunLayout(run_dir).metrics) if run_dir is not None else None
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
        "routing": _routing_metrics(table, y_pred == y_true),
    }
    comparison = {"text models": metrics["text_label_weighted_f1"]}
    if with_image.any():
        image_codes = table["image_prdtypecode"].to_numpy()[with_image].astype(np.int64)
        metrics["final_rows_with_image"] = classification_summary(
            probs[with_image], y_true[with_image]
        )
        metrics["image_label_weighted_f1_rows_with_image"] = weighted_f1(
            y_true[with_image], codes_to_indices(image_codes)
        )
        comparison["image models (rows with an image)"] = metrics[
            "image_label_weighted_f1_rows_with_image"
        ]
    comparison["stack (final)"] = metrics["final"]["weighted_f1"]
    per_class = per_class_report(y_true, y_pred)
    per_class.to_csv(out_dir / "per_class.csv", index=False)
    figures = _draw(out_dir, probs, y_true, y_pred, per_class, comparison, metrics, run, run_dir)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return Evaluation(metrics=metrics, per_class=per_class, figures=figures, run=run)


def _draw(
    out_dir: Path, probs: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray,
    per_class: pd.DataFrame, comparison: dict[str, float], metrics: dict[str, Any],
    run: TrainingReport | None, run_dir: Path | None,
) -> dict[str, dict[str, Path]]:  # fmt: skip
    curves = {"these rows": coverage_precision_curve(probs, y_true)}
    target = None
    if run is not None:
        curves["held-out rows in training (cross-fitted)"] = run.routing.curve
        target = run.routing.target_precision
    routing = metrics["routing"]
    point = None
    if routing and routing["auto_rows"]:
        point = (routing["coverage"], routing["precision"])
    calibration = {
        "The final probabilities on these rows": plot_reliability(
            {"final": (probs, y_true)}, "Final probabilities", out_dir / "reliability_final.png"
        )
    }
    if run_dir is not None:
        for name, curve in calibration_curves(run_dir).items():
            caption = f"{name} on the held-out rows, before and after temperature scaling"
            calibration[caption] = plot_reliability(
                curve, name, out_dir / f"reliability_{name}.png"
            )
    return {
        "Acting on confidence": {
            "Precision of the products accepted automatically, against their share": (
                plot_coverage_precision(curves, target, point, out_dir / "coverage_precision.png")
            )
        },
        "Calibration": calibration,
        "Where the errors are": {
            "Confusion between categories": plot_confusion(
                y_true, y_pred, out_dir / "confusion_matrix.png"
            ),
            "F1 of each category, worst first": plot_per_class_f1(
                per_class, out_dir / "per_class_f1.png"
            ),
        },
        "Text, image and the stack": {
            "Weighted F1 of each modality's blend and of the final stack": plot_modalities(
                comparison, out_dir / "modalities.png"
            )
        },
    }


def evaluate_predictions(
    predictions: Path, labels_csv: Path, out_dir: Path, run_dir: Path | None = None
) -> dict[str, Any]:
    """:func:`compute_evaluation`, then ``index.html``; returns the metrics."""
    evaluation = compute_evaluation(predictions, labels_csv, out_dir, run_dir)
    write_html_report(out_dir / "index.html", "Evaluation", evaluation)
    return evaluation.metrics


# --------------------------------------------------------------------------------------------
# The page
# --------------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:1150px;margin:1.5em auto;color:#1d2330;
padding:0 1em} h1{margin-bottom:.1em} .lede{color:#555;margin-top:0}
.cards{display:flex;flex-wrap:wrap;gap:1em;margin:1.2em 0}
.card{border:1px solid #dde;border-radius:8px;padding:.7em 1.1em;min-width:12em}
.card .value{display:block;font-size:2em;font-weight:600} .card .note{color:#666;font-size:.85em}
h2{border-bottom:2px solid #eef;padding-bottom:.2em;margin-top:1.6em}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top}
figcaption{font-size:.85em;color:#555;max-width:560px} img{max-width:100%}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em}
td,th{border-bottom:1px solid #eee;padding:4px 10px;text-align:right}
th{background:#f5f6fa} td:first-child,th:first-child{text-align:left}
details{margin:1em 0} pre{font-size:.8em;background:#f8f8fb;padding:1em;overflow:auto}
"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}">'


def html_table(header: list[str], rows: list[list[str]]) -> str:
    """A plain HTML table of already formatted cells."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def headline(evaluation: Evaluation) -> list[tuple[str, str, str]]:
    """The page's first numbers: ``(label, value, note)``."""
    metrics = evaluation.metrics
    final, routing = metrics["final"], metrics["routing"]
    rows = int(final["rows"])
    cards = [("Weighted F1", f"{final['weighted_f1']:.3f}", f"accuracy {final['accuracy']:.3f}")]
    if routing is not None:
        target = evaluation.run.routing.target_precision if evaluation.run else None
        goal = f" (target {target:.0%})" if target is not None else ""
        precision = routing["precision"]
        cards.append(
            ("Accepted automatically", f"{routing['coverage']:.1%}",
             f"{routing['auto_rows']} of {rows} products; precision "
             f"{precision:.3f}{goal}" if precision is not None else "none accepted")
        )  # fmt: skip
    cards.append(("ECE", f"{final['ece']:.3f}", "expected calibration error (15 bins)"))
    with_image = metrics["rows_with_image"]
    cards.append(("Products", f"{rows}", f"{with_image} with a usable image"))
    return cards


def _thresholds(report: TrainingReport) -> str:
    routing = report.routing
    rows = []
    for path, values in routing.thresholds.items():
        others = "every other category" if values["per_class"] else "every category"
        rows.append([path, others, f"{values['global_threshold']:.3f}"])
        for code, threshold in sorted(values["per_class"].items(), key=lambda kv: int(kv[0])):
            rows.append([path, f"{CATEGORY_NAMES[int(code)]} ({code})", f"{threshold:.3f}"])
    expected = routing.expected
    low, high = expected.precision_interval
    summary = (
        f"<p>Thresholds fitted at {routing.target_precision:.0%} precision on the training run's "
        f"held-out rows. Expected there (cross-fitted): coverage {expected.coverage:.1%}, "
        f"precision {expected.precision or 0:.3f} (95% interval {low:.3f} to {high:.3f}). A "
        f"threshold above 1 accepts nothing.</p>"
    )
    return summary + html_table(["path", "predicted category", "confidence threshold"], rows)


def write_html_report(
    path: Path, title: str, evaluation: Evaluation, sections: list[str] | None = None
) -> Path:
    """A self-contained page (figures inlined, no external assets): headline numbers,
    ``sections``, then the figures, the routing thresholds and the per-class table."""
    metrics = evaluation.metrics
    cards = "".join(
        f'<div class="card"><span class="note">{html.escape(label)}</span>'
        f'<span class="value">{html.escape(value)}</span><span class="note">'
        f"{html.escape(note)}</span></div>"
        for label, value, note in headline(evaluation)
    )
    parts = [
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='lede'>{int(metrics['final']['rows'])} labelled products scored by the "
        f"model bundle.</p>",
        f"<div class='cards'>{cards}</div>",
        *(sections or []),
    ]
    for section, figures in evaluation.figures.items():
        parts.append(f"<h2>{html.escape(section)}</h2>")
        if section == "Acting on confidence" and evaluation.run is not None:
            parts.append(_thresholds(evaluation.run))
        parts.extend(
            f"<figure>{_img(figure)}<figcaption>{html.escape(caption)}</figcaption></figure>"
            for caption, figure in figures.items()
        )
    parts.append("<h2>Every category</h2>")
    parts.append(evaluation.per_class.to_html(index=False, float_format=lambda v: f"{v:.3f}"))
    raw = html.escape(json.dumps(metrics, indent=1))
    parts.append(f"<details><summary>All metrics (JSON)</summary><pre>{raw}</pre></details>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
