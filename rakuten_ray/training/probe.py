"""A linear head fitted exactly on frozen features: a multinomial logistic regression.

``head_fit: probe`` starts fine-tuning from this head instead of a zero head trained by a
few mini-batch steps, and ``benchmarks/frozen_baselines.py`` measures the frozen backbones
with the same fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression

from rakuten_ray.metrics import log_loss, softmax

#: Inverse L2 strengths tried; the lowest validation log loss wins.
C_GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
#: A class absent from the training rows gets this much less logit than the least likely
#: class that is present: about 1e-9 of its probability, and still finite for later training.
ABSENT_CLASS_MARGIN = 20.0


@dataclass(frozen=True)
class ProbeHead:
    """Weights of a linear head over every class, with how they were chosen."""

    weight: np.ndarray
    bias: np.ndarray
    C: float
    train_log_loss: float
    val_log_loss: float

    def probs(self, features: np.ndarray) -> np.ndarray:
        """Class probabilities of feature rows."""
        return head_probs(self.weight, self.bias, features)


def head_probs(weight: np.ndarray, bias: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Class probabilities of a linear head on feature rows."""
    return softmax(features @ weight.T + bias)


def _head(fit: LogisticRegression, num_classes: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    weight = np.zeros((num_classes, width), dtype=np.float32)
    bias = np.full(num_classes, fit.intercept_.min() - ABSENT_CLASS_MARGIN, dtype=np.float32)
    weight[fit.classes_] = fit.coef_
    bias[fit.classes_] = fit.intercept_
    return weight, bias


def fit_probe_head(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    num_classes: int,
    grid: Sequence[float] = C_GRID,
) -> ProbeHead:
    """Fit one logistic regression per inverse L2 strength of ``grid`` on the training rows
    and keep the one with the lowest log loss on the validation rows.

    Args:
        x_train: training features, shape ``(rows, width)``.
        y_train: their class indices (at least two distinct classes).
        x_val: validation features.
        y_val: their class indices.
        num_classes: width of the head (classes absent from ``y_train`` included).
    """
    x_train, x_val = x_train.astype(np.float64), x_val.astype(np.float64)
    fits = []
    for c in grid:
        fit = LogisticRegression(C=c, max_iter=3000).fit(x_train, y_train)
        weight, bias = _head(fit, num_classes, x_train.shape[1])
        fits.append((log_loss(head_probs(weight, bias, x_val), y_val), c, weight, bias))
    val_loss, c, weight, bias = min(fits, key=lambda fit: fit[0])
    train_loss = log_loss(head_probs(weight, bias, x_train), y_train)
    return ProbeHead(weight, bias, c, train_loss, val_loss)
