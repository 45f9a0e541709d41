"""Metrics: hand-checked values, edge cases and agreement with scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import log_loss as sk_log_loss

from rakuten_ray.metrics import (
    accuracy,
    brier_score,
    classification_summary,
    classwise_ece,
    ece,
    log_loss,
    reliability_curve,
    softmax,
    weighted_f1,
)

# Three rows, three classes; confidences 0.75, 0.65, 0.65 sit inside bins, away from edges.
PROBS = np.array([[0.75, 0.15, 0.10], [0.10, 0.65, 0.25], [0.20, 0.15, 0.65]])
LABELS = np.array([0, 2, 1])  # first row right, the other two wrong


def test_softmax_stable_and_normalised() -> None:
    p = softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    assert p.dtype == np.float64
    np.testing.assert_allclose(p, [[0.5, 0.5, 0.0], [1 / 3, 1 / 3, 1 / 3]], atol=1e-15)


def test_log_loss_hand_checked() -> None:
    expected = -(math.log(0.75) + math.log(0.25) + math.log(0.15)) / 3
    assert log_loss(PROBS, LABELS) == pytest.approx(expected, rel=1e-12)


def test_log_loss_clips_and_ignores_absent_classes() -> None:
    probs = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    # Class 2 never occurs; the first row gives the true class probability 0 -> clipped.
    assert log_loss(probs, np.array([0, 0])) == pytest.approx(-math.log(1e-15) / 2)


def test_log_loss_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), size=200)
    y = rng.integers(0, 5, size=200)
    assert log_loss(probs, y) == pytest.approx(sk_log_loss(y, probs, labels=range(5)), rel=1e-12)


def test_brier_hand_checked() -> None:
    # Row sums of squared errors: 0.0625+0.0225+0.01, 0.01+0.4225+0.5625, 0.04+0.7225+0.4225.
    expected = (0.095 + 0.995 + 1.185) / 3
    assert brier_score(PROBS, LABELS) == pytest.approx(expected, rel=1e-12)


def test_ece_hand_checked() -> None:
    # 10 bins: bin 7 holds 0.75 (right, gap 0.25); bin 6 holds 0.65 twice (wrong, gap 0.65).
    assert ece(PROBS, LABELS, n_bins=10) == pytest.approx((0.25 + 2 * 0.65) / 3, rel=1e-12)
    curve = reliability_curve(PROBS, LABELS, n_bins=10)
    assert curve.count.tolist() == [0] * 6 + [2, 1, 0, 0]
    assert curve.confidence[6] == pytest.approx(0.65) and curve.accuracy[7] == 1.0
    assert np.isnan(curve.accuracy[0])


def test_perfect_predictions_are_calibrated() -> None:
    y = np.array([0, 1, 2, 1])
    probs = np.eye(3)[y]
    assert ece(probs, y) == 0.0 and classwise_ece(probs, y) == 0.0
    summary = classification_summary(probs, y)
    assert summary["weighted_f1"] == 1.0 and summary["accuracy"] == 1.0
    assert summary["log_loss"] == pytest.approx(0.0, abs=1e-12) and summary["brier"] == 0.0
    assert summary["rows"] == 4.0


def test_summary_keys() -> None:
    assert set(classification_summary(PROBS, LABELS)) == {
        "weighted_f1",
        "accuracy",
        "log_loss",
        "brier",
        "ece",
        "classwise_ece",
        "rows",
    }


def test_classwise_ece_hand_checked() -> None:
    probs = np.array([[0.8, 0.2], [0.8, 0.2]])
    y = np.array([0, 1])
    # Class 0: both rows in the 0.8 bin, hit rate 0.5 -> 0.3. Class 1: 0.2 bin, 0.5 -> 0.3.
    assert classwise_ece(probs, y, n_bins=10) == pytest.approx(0.3)


def test_f1_and_accuracy() -> None:
    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    assert accuracy(y_true, y_pred) == 0.75
    # Class 0: P=1, R=0.5, F1=2/3; class 1: P=2/3, R=1, F1=0.8; equal support.
    assert weighted_f1(y_true, y_pred) == pytest.approx((2 / 3 + 0.8) / 2)


@pytest.mark.parametrize(
    ("probs", "y", "message"),
    [
        (np.array([[0.5, np.nan]]), np.array([0]), "NaN"),
        (np.array([0.5, 0.5]), np.array([0]), "2-D"),
        (np.array([[0.5, 0.5]]), np.array([2]), "0..1"),
        (np.array([[0.5, 0.5]]), np.array([0, 1]), "rows"),
        (np.zeros((0, 3)), np.array([], dtype=int), "at least one row"),
    ],
)
def test_bad_inputs_rejected(probs: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        log_loss(probs, y)
