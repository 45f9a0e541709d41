"""Temperature scaling: recovery of a known temperature, calibration gain and input guards."""

from __future__ import annotations

import numpy as np
import pytest

from rakuten_ray.fusion.calibration import apply_temperature, calibration_report, fit_temperature
from rakuten_ray.metrics import ece, log_loss, softmax

N_ROWS, N_CLASSES = 20_000, 27


def draw_logits(rng: np.random.Generator) -> np.ndarray:
    """Gaussian logits plus a boost of random size on one class per row.

    The varied margins give rows of every confidence level, which is what pins the
    temperature down whether the true one sharpens or flattens the logits.
    """
    z = rng.normal(0.0, 2.0, size=(N_ROWS, N_CLASSES))
    z[np.arange(N_ROWS), rng.integers(0, N_CLASSES, N_ROWS)] += rng.uniform(0.0, 8.0, N_ROWS)
    return z


def sample_labels(rng: np.random.Generator, probs: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(probs, axis=1)
    drawn = (cumulative < rng.random((len(probs), 1))).sum(axis=1)
    return np.minimum(drawn, probs.shape[1] - 1)


@pytest.mark.parametrize("true_t", [0.5, 2.0])
def test_recovers_known_temperature(true_t: float) -> None:
    rng = np.random.default_rng(0)
    z = draw_logits(rng)
    y = sample_labels(rng, softmax(z / true_t))
    fitted = fit_temperature(z, y)
    assert fitted == pytest.approx(true_t, rel=0.02)
    # Converged: nudging T either way does not lower the loss.
    best = log_loss(apply_temperature(z, fitted), y)
    for nudge in (1 - 1e-4, 1 + 1e-4):
        assert best <= log_loss(apply_temperature(z, fitted * nudge), y)


def test_scaling_fixes_over_confident_logits() -> None:
    rng = np.random.default_rng(1)
    z = draw_logits(rng)
    y = sample_labels(rng, softmax(z))
    over_confident = 3.0 * z
    fitted = fit_temperature(over_confident, y)
    assert fitted == pytest.approx(3.0, rel=0.03)
    before = ece(softmax(over_confident), y)
    after = ece(apply_temperature(over_confident, fitted), y)
    assert after < 0.02 < before / 2


def test_report_before_and_after() -> None:
    rng = np.random.default_rng(2)
    z = rng.normal(0.0, 4.0, size=(2_000, 5))
    y = sample_labels(rng, softmax(z / 2.0))
    fitted = fit_temperature(z, y)
    report = calibration_report(z, y, fitted)
    assert report["temperature"] == fitted
    for side in ("before", "after"):
        assert set(report[side]) == {"log_loss", "brier", "ece", "classwise_ece"}
    assert report["after"]["log_loss"] < report["before"]["log_loss"]
    assert report["after"]["ece"] < report["before"]["ece"]


def test_float32_logits_give_float64_probabilities() -> None:
    probs = apply_temperature(np.array([[80.0, 0.0, -80.0]], dtype=np.float32), 0.5)
    assert probs.dtype == np.float64 and np.isclose(probs.sum(), 1.0)


@pytest.mark.parametrize(
    ("logits", "message"),
    [
        (np.zeros((0, 27)), "at least one row"),
        (np.array([[0.0, np.nan, 1.0]]), "NaN"),
        (np.array([[0.0, np.inf, 1.0]]), "NaN or infinite"),
    ],
)
def test_fit_rejects_bad_logits(logits: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fit_temperature(logits, np.zeros(len(logits), dtype=int))


@pytest.mark.parametrize("bad_t", [0.0, -1.0, float("nan"), float("inf")])
def test_apply_rejects_bad_temperature(bad_t: float) -> None:
    with pytest.raises(ValueError, match="temperature"):
        apply_temperature(np.zeros((1, 3)), bad_t)
