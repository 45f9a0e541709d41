"""Blending the calibrated probabilities of several models of one modality.

Two rules fit the weights on held-out predictions: the original inverse-log-loss rule, and the
weights on the simplex that minimise the blend's log loss. Both are reported side by side so a
run's metrics show what the optimisation gained.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from scipy.optimize import minimize

from rakuten_ray.metrics import (
    LOG_LOSS_EPS,
    check_labels,
    check_matrix,
    log_loss,
    weighted_f1,
    weighted_sum,
)

BlendMethod = Literal["inverse_log_loss", "optimal"]
BLEND_METHODS: tuple[str, ...] = get_args(BlendMethod)


def _check_prob_list(prob_list: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Probability matrices of equal shape, as float64 and non-negative."""
    if len(prob_list) == 0:
        raise ValueError("need at least one probability matrix to blend")
    mats = [check_matrix(p, f"prob_list[{i}]") for i, p in enumerate(prob_list)]
    for i, mat in enumerate(mats):
        if mat.shape != mats[0].shape:
            raise ValueError(f"prob_list[{i}] has shape {mat.shape}, expected {mats[0].shape}")
        if mat.min() < 0:
            raise ValueError(f"prob_list[{i}] holds negative probabilities")
    return mats


def _check_weights(weights: Sequence[float] | np.ndarray, n_models: int) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (n_models,):
        raise ValueError(f"need {n_models} weights, got shape {w.shape}")
    if not np.isfinite(w).all() or w.min() < 0 or w.sum() <= 0:
        raise ValueError(f"weights must be finite, non-negative and not all zero, got {w}")
    return w


def inverse_log_loss_weights(log_losses: Sequence[float]) -> np.ndarray:
    """The original rule: ``w_i = (1 / LL_i) / sum_j (1 / LL_j)``.

    Raises:
        ValueError: empty input, or a log loss that is not positive and finite.
    """
    losses = np.asarray(log_losses, dtype=np.float64)
    if losses.ndim != 1 or losses.size == 0:
        raise ValueError(f"need a non-empty 1-D sequence of log losses, got shape {losses.shape}")
    if not np.isfinite(losses).all() or losses.min() <= 0:
        raise ValueError(f"log losses must be positive and finite, got {losses}")
    inverse = 1.0 / losses
    return inverse / inverse.sum()


def blend(prob_list: Sequence[np.ndarray], weights: Sequence[float] | np.ndarray) -> np.ndarray:
    """Weighted sum of probability matrices, renormalised so every row sums to 1.

    A row whose blended mass is zero (every weighted model gave it zero everywhere) becomes
    uniform rather than NaN.
    """
    mats = _check_prob_list(prob_list)
    w = _check_weights(weights, len(mats))
    mixed = weighted_sum(mats, w)
    totals = mixed.sum(axis=1, keepdims=True)
    n_classes = mixed.shape[1]
    return np.divide(mixed, totals, out=np.full_like(mixed, 1.0 / n_classes), where=totals > 0)


def _true_class_matrix(mats: list[np.ndarray], labels: np.ndarray) -> np.ndarray:
    """(rows, models) probability each model gives the true class: all the log loss needs."""
    rows = np.arange(len(labels))
    return np.stack([mat[rows, labels] for mat in mats], axis=1)


def _blend_nll(w: np.ndarray, true_probs: np.ndarray) -> tuple[float, np.ndarray]:
    """Blend log loss as a function of the weights, and its gradient."""
    mixed = np.maximum(true_probs @ w, LOG_LOSS_EPS)
    return float(-np.mean(np.log(mixed))), -np.mean(true_probs / mixed[:, None], axis=0)


def optimal_simplex_weights(prob_list: Sequence[np.ndarray], y_idx: np.ndarray) -> np.ndarray:
    """Weights on the simplex minimising the blend's log loss.

    The loss is convex in the weights, so SLSQP with the simplex constraint (weights in
    [0, 1] summing to 1) from the uniform start finds the optimum, including exact zeros for
    models that add nothing. The result is compared with the uniform start and the better of
    the two is returned, so it is never worse than uniform weights even if the solver stops
    early.
    """
    mats = _check_prob_list(prob_list)
    labels = check_labels(y_idx, mats[0].shape[0], mats[0].shape[1])
    true_probs = _true_class_matrix(mats, labels)
    uniform = np.full(len(mats), 1.0 / len(mats))
    if len(mats) == 1:
        return uniform
    result = minimize(
        _blend_nll,
        uniform,
        args=(true_probs,),
        jac=True,
        method="SLSQP",
        bounds=[(0.0, 1.0)] * len(mats),
        constraints=[{"type": "eq", "fun": lambda w: np.sum(w) - 1.0, "jac": np.ones_like}],
        options={"maxiter": 500, "ftol": 1e-12},
    )
    # The solver honours the constraints only to its tolerance: project back onto the simplex.
    fitted = np.clip(result.x, 0.0, None)
    fitted /= fitted.sum()
    if _blend_nll(fitted, true_probs)[0] <= _blend_nll(uniform, true_probs)[0]:
        return fitted
    return uniform


@dataclass(frozen=True)
class BlendFit:
    """Chosen blend weights and the scores of every weighting rule.

    Attributes:
        method: the rule whose weights were chosen.
        weights: the chosen weights (sum to 1), one per model in input order.
        report: per rule, ``weights`` (list), ``log_loss`` and ``weighted_f1`` of its blend,
            plus ``model_log_losses``, the log loss of each model alone.
    """

    method: BlendMethod
    weights: np.ndarray
    report: dict[str, object]


def _blend_scores(mats: list[np.ndarray], labels: np.ndarray, w: np.ndarray) -> dict[str, object]:
    blended = blend(mats, w)
    return {
        "weights": [float(x) for x in w],
        "log_loss": log_loss(blended, labels),
        "weighted_f1": weighted_f1(labels, np.argmax(blended, axis=1)),
    }


def fit_blend_weights(
    prob_list: Sequence[np.ndarray], y_idx: np.ndarray, method: BlendMethod = "optimal"
) -> BlendFit:
    """Fit blend weights with both rules and keep those of ``method``.

    Args:
        prob_list: one (rows, classes) calibrated probability matrix per model.
        y_idx: true class indices of the rows.
        method: ``"inverse_log_loss"`` (the original rule) or ``"optimal"``.

    Raises:
        ValueError: unknown method, or inconsistent inputs.
    """
    if method not in BLEND_METHODS:
        raise ValueError(f"unknown blend method {method!r}; expected one of {BLEND_METHODS}")
    mats = _check_prob_list(prob_list)
    labels = check_labels(y_idx, mats[0].shape[0], mats[0].shape[1])
    # A model with zero loss would get an infinite inverse weight; the floor makes it dominate
    # the blend instead.
    model_losses = [max(log_loss(mat, labels), LOG_LOSS_EPS) for mat in mats]
    candidates = {
        "inverse_log_loss": inverse_log_loss_weights(model_losses),
        "optimal": optimal_simplex_weights(mats, labels),
    }
    report: dict[str, object] = {"model_log_losses": model_losses}
    report.update({name: _blend_scores(mats, labels, w) for name, w in candidates.items()})
    return BlendFit(method=method, weights=candidates[method], report=report)
