"""Probability and classification metrics shared by calibration, blending, stacking and reports.

Labels are class indices ``0..K-1`` where ``K`` is the number of probability columns. Every
function works in float64 whatever the input dtype, so scores computed on float32 model outputs
match the ones computed during fitting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
from sklearn.metrics import f1_score

#: Probabilities of the true class are clipped here before the log, so one confident mistake
#: gives a large but finite loss.
LOG_LOSS_EPS = 1e-15

#: Number of equal-width confidence bins used by the calibration errors.
DEFAULT_BINS = 15


def check_matrix(values: np.ndarray, name: str) -> np.ndarray:
    """Return ``values`` as a finite, non-empty 2-D float64 array.

    Raises:
        ValueError: wrong number of dimensions, no rows or columns, or a NaN / infinite value.
    """
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be 2-D (rows, classes), got shape {array.shape}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column, got {array.shape}")
    if not np.isfinite(array).all():
        bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
        raise ValueError(
            f"{name} holds NaN or infinite values in {len(bad_rows)} row(s), "
            f"first at row {int(bad_rows[0])}"
        )
    return array


def check_labels(y_idx: np.ndarray, n_rows: int, n_classes: int) -> np.ndarray:
    """Return class indices as a 1-D int64 array after checking length and range.

    Raises:
        ValueError: not 1-D, length differs from ``n_rows``, not integers, or out of range.
    """
    labels = np.asarray(y_idx)
    if labels.ndim != 1:
        raise ValueError(f"labels must be 1-D, got shape {labels.shape}")
    if len(labels) != n_rows:
        raise ValueError(f"labels have {len(labels)} rows but the scores have {n_rows}")
    # Whole-number floats are accepted: labels read back from CSV or parquet often are floats.
    whole_floats = labels.dtype.kind == "f" and bool(
        np.all(np.isfinite(labels) & (labels == np.round(labels)))
    )
    if labels.dtype.kind not in "iu" and not whole_floats:
        raise ValueError(f"labels must be integer class indices, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must lie in 0..{n_classes - 1}, got range {labels.min()}..{labels.max()}"
        )
    return labels


def _scores_and_labels(probs: np.ndarray, y_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores = check_matrix(probs, "probs")
    return scores, check_labels(y_idx, scores.shape[0], scores.shape[1])


def log_softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Log of the softmax, stable for large logits (the row maximum is subtracted first)."""
    z = np.asarray(logits, dtype=np.float64)
    shifted = z - np.max(z, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Softmax in float64, stable for large logits."""
    return np.exp(log_softmax(logits, axis=axis))


def weighted_sum(arrays: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """``sum_i weights[i] * arrays[i]``, as plain elementwise products and sums.

    A BLAS contraction (``tensordot``, ``einsum``) would be faster, but its vector kernels
    round differently in their tail loops, so an element's value would depend on the array's
    size and its position in it; scored rows must not depend on the rows scored with them.
    """
    total = np.zeros(np.shape(arrays[0]))
    for array, weight in zip(arrays, weights, strict=True):
        total = total + float(weight) * np.asarray(array, dtype=np.float64)
    return total


def log_loss(probs: np.ndarray, y_idx: np.ndarray) -> float:
    """Mean negative log probability of the true class.

    Only the true-class column is read, so classes absent from ``y_idx`` need no special care.
    """
    scores, labels = _scores_and_labels(probs, y_idx)
    true_class = scores[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(true_class, LOG_LOSS_EPS, 1.0))))


def _one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    encoded = np.zeros((len(labels), n_classes), dtype=np.float64)
    encoded[np.arange(len(labels)), labels] = 1.0
    return encoded


def brier_score(probs: np.ndarray, y_idx: np.ndarray) -> float:
    """Multiclass Brier score: mean over rows of the squared distance to the one-hot label."""
    scores, labels = _scores_and_labels(probs, y_idx)
    return float(np.mean(np.sum((scores - _one_hot(labels, scores.shape[1])) ** 2, axis=1)))


class ReliabilityCurve(NamedTuple):
    """Per-bin calibration data; empty bins hold NaN confidence and accuracy, count 0."""

    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray


def _binned(scores: np.ndarray, hits: np.ndarray, n_bins: int) -> ReliabilityCurve:
    """Mean score, mean hit and count in ``n_bins`` equal-width bins of ``[0, 1]``."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    # Bins are [lo, hi); a score of exactly 1 belongs to the last bin.
    bins = np.minimum((np.clip(scores, 0.0, 1.0) * n_bins).astype(np.int64), n_bins - 1)
    count = np.bincount(bins, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(bins, weights=scores, minlength=n_bins) / count
        accuracy = np.bincount(bins, weights=hits.astype(np.float64), minlength=n_bins) / count
    return ReliabilityCurve(confidence, accuracy, count)


def _calibration_gap(curve: ReliabilityCurve) -> float:
    filled = curve.count > 0
    gaps = np.abs(curve.accuracy[filled] - curve.confidence[filled])
    return float(np.sum(curve.count[filled] * gaps) / np.sum(curve.count))


def reliability_curve(
    probs: np.ndarray, y_idx: np.ndarray, n_bins: int = DEFAULT_BINS
) -> ReliabilityCurve:
    """Top-label reliability data: per confidence bin, mean confidence, accuracy and count."""
    scores, labels = _scores_and_labels(probs, y_idx)
    hits = np.argmax(scores, axis=1) == labels
    return _binned(np.max(scores, axis=1), hits, n_bins)


def ece(probs: np.ndarray, y_idx: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Top-label expected calibration error with equal-width bins weighted by their counts."""
    return _calibration_gap(reliability_curve(probs, y_idx, n_bins))


def classwise_ece(probs: np.ndarray, y_idx: np.ndarray, n_bins: int = DEFAULT_BINS) -> float:
    """Mean over all classes of the calibration error of that class's probability column."""
    scores, labels = _scores_and_labels(probs, y_idx)
    per_class = [
        _calibration_gap(_binned(scores[:, k], labels == k, n_bins)) for k in range(scores.shape[1])
    ]
    return float(np.mean(per_class))


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of rows whose predicted class equals the true class."""
    truth, pred = np.asarray(y_true), np.asarray(y_pred)
    if truth.shape != pred.shape or truth.ndim != 1 or truth.size == 0:
        raise ValueError(
            f"need two non-empty 1-D arrays of equal length, got {truth.shape}, {pred.shape}"
        )
    return float(np.mean(truth == pred))


def weighted_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """F1 averaged over classes weighted by their support (the challenge's score)."""
    return float(f1_score(y_true, y_pred, average="weighted", zero_division=0))


def classification_summary(probs: np.ndarray, y_idx: np.ndarray) -> dict[str, float]:
    """The scores reported for every model and fusion stage, keyed by metric name."""
    scores, labels = _scores_and_labels(probs, y_idx)
    predicted = np.argmax(scores, axis=1)
    return {
        "weighted_f1": weighted_f1(labels, predicted),
        "accuracy": accuracy(labels, predicted),
        "log_loss": log_loss(scores, labels),
        "brier": brier_score(scores, labels),
        "ece": ece(scores, labels),
        "classwise_ece": classwise_ece(scores, labels),
        "rows": float(len(labels)),
    }
