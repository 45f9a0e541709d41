"""The exact linear head fit of ``head_fit: probe`` (a logistic regression on features)."""

from __future__ import annotations

import numpy as np
import pytest

from rakuten_ray.metrics import log_loss
from rakuten_ray.training.probe import C_GRID, fit_probe_head

NUM_CLASSES = 6
PRESENT = (0, 2, 5)


def blobs(rows_per_class: int, spread: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs in 8 dimensions around one centre per present class."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).normal(size=(NUM_CLASSES, 8)) * 3.0
    y = np.repeat(np.array(PRESENT), rows_per_class)
    return centres[y] + rng.normal(scale=spread, size=(len(y), 8)), y


def test_the_fitted_head_separates_the_classes_and_covers_every_class() -> None:
    x_train, y_train = blobs(40, 1.0, seed=1)
    x_val, y_val = blobs(20, 1.0, seed=2)
    head = fit_probe_head(x_train, y_train, x_val, y_val, NUM_CLASSES)

    assert head.weight.shape == (NUM_CLASSES, 8) and head.bias.shape == (NUM_CLASSES,)
    assert head.weight.dtype == np.float32 and head.bias.dtype == np.float32
    probs = head.probs(x_val)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)
    assert (probs.argmax(axis=1) == y_val).mean() > 0.95
    # Classes never seen in training get almost nothing, but a finite logit.
    absent = [c for c in range(NUM_CLASSES) if c not in PRESENT]
    assert probs[:, absent].max() < 1e-6
    assert np.all(head.weight[absent] == 0) and np.isfinite(head.bias).all()
    assert head.val_log_loss == pytest.approx(log_loss(probs, y_val))
    assert head.train_log_loss == pytest.approx(log_loss(head.probs(x_train), y_train))


def test_the_strength_is_the_one_with_the_lowest_validation_loss() -> None:
    """Few, overlapping rows: the weakest penalty (largest C) overfits, the strongest
    underfits, and the chosen strength beats every other on the validation rows."""
    x_train, y_train = blobs(15, 4.0, seed=3)
    x_val, y_val = blobs(60, 4.0, seed=4)
    chosen = fit_probe_head(x_train, y_train, x_val, y_val, NUM_CLASSES)
    assert min(C_GRID) < chosen.C < max(C_GRID)  # measured: 0.03
    for c in C_GRID:
        other = fit_probe_head(x_train, y_train, x_val, y_val, NUM_CLASSES, grid=(c,))
        assert chosen.val_log_loss <= other.val_log_loss + 1e-12
