"""The evaluation report's figures, drawn with matplotlib's ``Figure`` (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import confusion_matrix

from rakuten_ray.catalog import CATEGORY_NAMES, CLASS_CODES
from rakuten_ray.metrics import reliability_curve

#: Longest category name on an axis, in characters.
NAME_CHARS = 26


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _label(code: int) -> str:
    name = CATEGORY_NAMES[code]
    short = name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"
    return f"{short} ({code})"


def plot_confusion(y_true: np.ndarray, y_pred: np.ndarray, path: Path) -> Path:
    """Row-normalised confusion heatmap over the 27 categories, named in French."""
    matrix = confusion_matrix(y_true, y_pred, labels=np.arange(len(CLASS_CODES))).astype(float)
    matrix /= np.maximum(matrix.sum(axis=1, keepdims=True), 1.0)
    fig = Figure(figsize=(11, 9.5))
    ax = fig.subplots()
    image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1)
    ticks = np.arange(len(CLASS_CODES))
    labels = [_label(code) for code in CLASS_CODES]
    ax.set_xticks(ticks, labels, rotation=90, fontsize=7)
    ax.set_yticks(ticks, labels, fontsize=7)
    ax.set_xlabel("predicted category")
    ax.set_ylabel("true category")
    ax.set_title("Where each category's products go (share of the true category)")
    fig.colorbar(image, ax=ax, fraction=0.04)
    return _save(fig, path)


def plot_reliability(
    curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, path: Path
) -> Path:
    """Reliability diagram (accuracy against confidence), one line per probability set."""
    fig = Figure(figsize=(4.6, 4.4))
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
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper left", fontsize=8)
    return _save(fig, path)


def plot_coverage_precision(
    curves: dict[str, Sequence[dict[str, float]]],
    target: float | None,
    operating_point: tuple[float, float] | None,
    path: Path,
) -> Path:
    """Precision of the accepted rows against the share accepted (coverage), one line per
    curve, with the target precision and the bundle's operating point."""
    fig = Figure(figsize=(5.6, 4.4))
    ax = fig.subplots()
    for label, points in curves.items():
        ax.plot([p["coverage"] for p in points], [p["precision"] for p in points], label=label)
    if target is not None:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.0%}")
    if operating_point is not None:
        ax.plot(*operating_point, marker="*", markersize=14, color="#e4572e", linestyle="none",
                label="accepted automatically")  # fmt: skip
    ax.set_xlabel("coverage (share of products accepted without a person)")
    ax.set_ylabel("precision of the accepted products")
    ax.set_xlim(0, 1.01)
    ax.set_title("Coverage against precision", fontsize=10)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def plot_per_class_f1(per_class: pd.DataFrame, path: Path) -> Path:
    """Per-category F1 as horizontal bars, worst at the top."""
    ordered = per_class.sort_values("f1")
    fig = Figure(figsize=(7.5, 8))
    ax = fig.subplots()
    positions = np.arange(len(ordered))
    ax.barh(positions, ordered["f1"], color="#2e86de")
    ax.set_yticks(positions, [_label(int(c)) for c in ordered["prdtypecode"]], fontsize=7)
    for y, (f1, support) in enumerate(zip(ordered["f1"], ordered["support"], strict=True)):
        ax.text(min(f1 + 0.01, 0.9), y, f"{f1:.2f} ({support})", va="center", fontsize=6)
    ax.set_xlim(0, 1)
    ax.set_xlabel("F1 (products in the evaluated rows)")
    ax.set_title("F1 by category", fontsize=10)
    return _save(fig, path)


def plot_modalities(scores: dict[str, float], path: Path) -> Path:
    """Weighted F1 of the text models, the image models and the stack, side by side."""
    fig = Figure(figsize=(5.6, 3.2))
    ax = fig.subplots()
    names = list(scores)
    bars = ax.barh(names, [scores[n] for n in names], color=["#8e9aaf", "#cbc0d3", "#2e86de"])
    for bar, name in zip(bars, names, strict=True):
        ax.text(bar.get_width() + 0.01, bar.get_y() + bar.get_height() / 2,
                f"{scores[name]:.3f}", va="center", fontsize=8)  # fmt: skip
    ax.set_xlim(0, 1.1)
    ax.invert_yaxis()
    ax.set_xlabel("weighted F1")
    ax.set_title("Text, image and the stack", fontsize=10)
    return _save(fig, path)
