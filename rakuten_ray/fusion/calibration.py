"""Temperature scaling: one scalar per deep model, ``softmax(logits / T)``.

The mean negative log likelihood is convex in ``1/T``, so it has a single minimum along any
monotone reparameterisation of it. Searching ``log(1/T)`` with a bounded scalar method makes the
problem scale-free (``T = 0.5`` and ``T = 2`` are equally far from 1) and converges to the
optimum to a set tolerance, instead of stopping after a fixed number of gradient steps.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar

from rakuten_ray.metrics import (
    brier_score,
    check_labels,
    check_matrix,
    classwise_ece,
    ece,
    log_loss,
    log_softmax,
    softmax,
)

#: Search interval for the temperature: 1/100 to 100, far beyond anything a trained model needs.
MAX_TEMPERATURE = 100.0

#: Tolerance on ``log(1/T)``: a relative precision on T of about 1e-9.
LOG_INVERSE_T_TOL = 1e-9


def _mean_nll(logits: np.ndarray, labels: np.ndarray, inverse_t: float) -> float:
    log_probs = log_softmax(logits * inverse_t, axis=1)
    return float(-np.mean(log_probs[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, y_idx: np.ndarray) -> float:
    """Temperature minimising the mean log loss of ``softmax(logits / T)``.

    Args:
        logits: (rows, classes) raw model outputs.
        y_idx: true class indices.

    Returns:
        The fitted temperature ``T > 0``.

    Raises:
        ValueError: empty input, NaN or infinite logits, or labels out of range.
    """
    z = check_matrix(logits, "logits")
    labels = check_labels(y_idx, z.shape[0], z.shape[1])
    bound = math.log(MAX_TEMPERATURE)
    result = minimize_scalar(
        lambda log_inverse_t: _mean_nll(z, labels, math.exp(log_inverse_t)),
        bounds=(-bound, bound),
        method="bounded",
        options={"xatol": LOG_INVERSE_T_TOL, "maxiter": 500},
    )
    if not result.success:
        raise RuntimeError(f"temperature search did not converge: {result.message}")
    return float(math.exp(-result.x))


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (math.isfinite(t) and t > 0):
        raise ValueError(f"temperature must be a positive finite number, got {temperature!r}")
    return t


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T)`` in float64."""
    return softmax(check_matrix(logits, "logits") / _check_temperature(temperature), axis=1)


def _calibration_scores(probs: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {
        "log_loss": log_loss(probs, labels),
        "brier": brier_score(probs, labels),
        "ece": ece(probs, labels),
        "classwise_ece": classwise_ece(probs, labels),
    }


def calibration_report(
    logits: np.ndarray,
    y_idx: np.ndarray,
    temperature: float,
    calibrated: np.ndarray | None = None,
) -> dict[str, float | dict[str, float]]:
    """Calibration scores before (``T = 1``) and after temperature scaling.

    Args:
        logits: (rows, classes) raw model outputs.
        y_idx: true class indices.
        temperature: the temperature reported.
        calibrated: the probabilities the ``after`` side is measured on; by default
            ``softmax(logits / temperature)``. Cross-fitting passes each row's probabilities
            under a temperature fitted without that row.

    Returns:
        ``{"temperature": T, "before": {...}, "after": {...}}`` where each side holds
        ``log_loss``, ``brier``, ``ece`` and ``classwise_ece`` (15 bins).
    """
    z = check_matrix(logits, "logits")
    labels = check_labels(y_idx, z.shape[0], z.shape[1])
    after = apply_temperature(z, temperature) if calibrated is None else calibrated
    if after.shape != z.shape:
        raise ValueError(f"calibrated has shape {after.shape}, expected {z.shape}")
    return {
        "temperature": _check_temperature(temperature),
        "before": _calibration_scores(softmax(z, axis=1), labels),
        "after": _calibration_scores(after, labels),
    }
