"""Blend weights: the original inverse-log-loss rule, the simplex optimum, and the blend."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rakuten_ray.fusion.blending import (
    blend,
    fit_blend_weights,
    inverse_log_loss_weights,
    optimal_simplex_weights,
)
from rakuten_ray.metrics import log_loss, softmax

N_ROWS, N_CLASSES = 3_000, 27


def calibrated_models(seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    """A strong model, a weaker one and pure noise, with labels drawn from the shared signal."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(0.0, 3.0, size=(N_ROWS, N_CLASSES))
    cumulative = np.cumsum(softmax(signal), axis=1)
    y = np.minimum((cumulative < rng.random((N_ROWS, 1))).sum(axis=1), N_CLASSES - 1)
    strong = softmax(signal + rng.normal(0.0, 1.5, size=signal.shape))
    weak = softmax(0.7 * signal + rng.normal(0.0, 1.5, size=signal.shape))
    noise = rng.dirichlet(np.ones(N_CLASSES), size=N_ROWS)
    return [strong, weak, noise], y


def test_inverse_log_loss_rule_by_hand() -> None:
    # 1/LL = 2, 1, 0.5; their sum is 3.5.
    weights = inverse_log_loss_weights([0.5, 1.0, 2.0])
    np.testing.assert_allclose(weights, [4 / 7, 2 / 7, 1 / 7], rtol=1e-15)
    assert weights.sum() == pytest.approx(1.0, abs=1e-15)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(1e-3, 1e3), min_size=1, max_size=6))
def test_inverse_log_loss_weights_sum_to_one(losses: list[float]) -> None:
    weights = inverse_log_loss_weights(losses)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12)
    # A lower loss never gets a lower weight.
    order = np.argsort(losses, kind="stable")
    assert np.all(np.diff(weights[order]) <= 1e-15)


@pytest.mark.parametrize("bad", [[], [0.0, 1.0], [-1.0], [float("nan")]])
def test_inverse_log_loss_rejects_bad_losses(bad: list[float]) -> None:
    with pytest.raises(ValueError):
        inverse_log_loss_weights(bad)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_optimal_weights_on_simplex_and_beat_uniform(seed: int) -> None:
    models, y = calibrated_models(seed)
    weights = optimal_simplex_weights(models, y)
    assert weights.sum() == pytest.approx(1.0, abs=1e-12) and weights.min() >= 0
    assert weights[2] < 0.03, "pure noise gets (almost) no weight"
    uniform = np.full(len(models), 1 / len(models))
    best = log_loss(blend(models, weights), y)
    assert best <= log_loss(blend(models, uniform), y)
    for model in models:
        assert best <= log_loss(model, y) + 1e-9


def test_optimal_weights_single_model() -> None:
    models, y = calibrated_models(0)
    np.testing.assert_array_equal(optimal_simplex_weights(models[:1], y), [1.0])


@settings(max_examples=30, deadline=None)
@given(
    st.integers(0, 2**32 - 1),
    st.lists(st.floats(0.0, 10.0), min_size=2, max_size=4).filter(lambda w: sum(w) > 0),
)
def test_blend_rows_sum_to_one(seed: int, weights: list[float]) -> None:
    rng = np.random.default_rng(seed)
    models = [rng.dirichlet(np.ones(5), size=40) for _ in weights]
    models[0][:3] = 0.0  # rows some models leave empty
    out = blend(models, weights)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    assert np.isfinite(out).all() and out.min() >= 0


def test_all_zero_rows_become_uniform() -> None:
    zeros = np.zeros((2, 4))
    np.testing.assert_array_equal(blend([zeros, zeros], [0.5, 0.5]), np.full((2, 4), 0.25))


@pytest.mark.parametrize(
    ("models", "weights", "message"),
    [
        ([np.ones((2, 3)) / 3, np.ones((3, 3)) / 3], [0.5, 0.5], "shape"),
        ([np.ones((2, 3)) / 3], [0.5, 0.5], "weights"),
        ([np.ones((2, 3)) / 3], [-1.0], "non-negative"),
        ([np.full((2, 3), -0.1)], [1.0], "negative"),
    ],
)
def test_blend_rejects_bad_inputs(
    models: list[np.ndarray], weights: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        blend(models, weights)


def test_fit_reports_both_methods() -> None:
    models, y = calibrated_models(5)
    fit = fit_blend_weights(models, y, method="inverse_log_loss")
    expected = inverse_log_loss_weights([log_loss(m, y) for m in models])
    np.testing.assert_allclose(fit.weights, expected)
    assert fit.method == "inverse_log_loss"
    assert set(fit.report) == {"model_log_losses", "inverse_log_loss", "optimal"}
    for method in ("inverse_log_loss", "optimal"):
        assert set(fit.report[method]) == {"weights", "log_loss", "weighted_f1"}
    assert fit.report["optimal"]["log_loss"] <= fit.report["inverse_log_loss"]["log_loss"]
    optimal = fit_blend_weights(models, y, method="optimal")
    np.testing.assert_allclose(optimal.weights, optimal.report["optimal"]["weights"])
    with pytest.raises(ValueError, match="unknown blend method"):
        fit_blend_weights(models, y, method="mean")  # type: ignore[arg-type]
