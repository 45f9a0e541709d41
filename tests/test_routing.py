"""Review routing: thresholds that reach a target precision on rows they were not fitted on,
decisions and reasons, the honest estimate."""

from __future__ import annotations

import numpy as np
import pytest

from rakuten_ray.catalog import CLASS_CODES
from rakuten_ray.config import ReviewParams
from rakuten_ray.fusion.routing import (
    AUTO,
    LOW_CONFIDENCE,
    MODALITIES_DISAGREE,
    NEVER,
    NO_IMAGE_LOW_CONFIDENCE,
    OWN,
    REVIEW,
    SHARED,
    PathThresholds,
    ReviewPolicy,
    fit_routing,
    threshold_for_precision,
    wilson_interval,
)

TARGET = 0.95
#: How far below the target the precision on unseen rows may fall: about 3 standard errors
#: of a precision of 0.95 measured on a few thousand accepted rows.
TOLERANCE = 0.015


def calibrated_rows(
    count: int, seed: int, overconfident_class: int | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Final probabilities of a calibrated model (a row with top probability c is right with
    probability c, except for ``overconfident_class``, right with probability 0.9 c), their
    class indices, and which rows have an image (text-only rows are less confident)."""
    rng = np.random.default_rng(seed)
    classes = len(CLASS_CODES)
    has_image = rng.random(count) < 0.7
    top = np.where(has_image, rng.beta(6, 1.5, count), rng.beta(3, 2, count))
    top = np.clip(top, 1.0 / classes + 1e-3, 1.0 - 1e-6)
    predicted = rng.integers(0, classes, count)
    probs = np.tile(((1 - top) / (classes - 1))[:, None], (1, classes))
    probs[np.arange(count), predicted] = top
    hit_rate = np.where(predicted == overconfident_class, 0.9 * top, top)
    right = rng.random(count) < hit_rate
    others = (predicted + rng.integers(1, classes, count)) % classes
    y_idx = np.where(right, predicted, others)
    return probs, y_idx, has_image


def test_threshold_is_the_lowest_that_reaches_the_target() -> None:
    confidence = np.array([0.99, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([True, True, True, False, True])
    assert threshold_for_precision(confidence, correct, 1.0) == pytest.approx(0.8)
    assert threshold_for_precision(confidence, correct, 0.8) == pytest.approx(0.6)
    assert threshold_for_precision(confidence, ~correct, 0.9) == NEVER
    assert threshold_for_precision(np.array([]), np.array([], dtype=bool), 0.9) == NEVER


def test_the_lower_bound_rule_needs_enough_rows_to_show_the_target() -> None:
    # All right: 30 rows cannot show 95% precision (Wilson lower end 0.886), 100 can (0.963).
    confidence = np.linspace(0.99, 0.5, 100)
    correct = np.ones(100, dtype=bool)
    first = slice(0, 30)
    assert threshold_for_precision(confidence[first], correct[first], TARGET) == confidence[29]
    assert threshold_for_precision(confidence[first], correct[first], TARGET, True) == NEVER
    assert threshold_for_precision(confidence, correct, TARGET, lower_bound=True) == 0.5
    # One wrong row in 100: 0.99 precision, but the interval starts at 0.946.
    correct[10] = False
    assert threshold_for_precision(confidence, correct, TARGET) == 0.5
    assert threshold_for_precision(confidence, correct, TARGET, lower_bound=True) == NEVER


def test_each_path_sets_its_threshold_where_its_own_rows_show_the_target() -> None:
    # The more confident rows of calibrated_rows play the text-only path here.
    probs, y_idx, confident = calibrated_rows(20_000, seed=5, overconfident_class=5)
    has_image = ~confident
    # The rows with an image are few, as in the real sample: 60 of them.
    keep = ~has_image | (np.cumsum(has_image) <= 60)
    probs, y_idx, has_image = probs[keep], y_idx[keep], has_image[keep]
    policy = ReviewPolicy.fit(probs, y_idx, has_image, TARGET, min_class_rows=30)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == y_idx

    text = policy.text_only
    assert text.rule == OWN
    accepted = confidence[~has_image] >= text.global_threshold
    right = correct[~has_image][accepted]
    assert wilson_interval(right.sum(), len(right))[0] >= TARGET  # the interval clears it
    point = threshold_for_precision(confidence[~has_image], correct[~has_image], TARGET)
    assert text.global_threshold > point  # stricter than the point estimate's threshold

    # 60 rows cannot show 95% at any threshold: the shared threshold, or a tighter one.
    image = policy.with_image
    assert image.rule == SHARED
    shared = threshold_for_precision(confidence, correct, TARGET, lower_bound=True)
    own_point = threshold_for_precision(confidence[has_image], correct[has_image], TARGET)
    assert image.global_threshold == max(shared, own_point)
    assert ReviewPolicy.from_json(policy.to_json()) == policy


def test_tied_confidences_are_accepted_together() -> None:
    confidence = np.array([0.9, 0.8, 0.8, 0.8])
    correct = np.array([True, True, False, False])
    # Accepting one of the 0.8 rows would be 100% precise, but all three come together.
    assert threshold_for_precision(confidence, correct, 0.9) == pytest.approx(0.9)


def test_thresholds_reach_the_target_on_rows_they_were_not_fitted_on() -> None:
    probs, y_idx, has_image = calibrated_rows(40_000, seed=1, overconfident_class=5)
    fit, test = slice(0, 20_000), slice(20_000, None)
    policy = ReviewPolicy.fit(probs[fit], y_idx[fit], has_image[fit], TARGET, min_class_rows=30)
    # The overconfident class needs a stricter threshold; none is ever relaxed.
    overall = policy.with_image.global_threshold
    assert policy.with_image.per_class[CLASS_CODES[5]] > overall
    assert all(t > overall for t in policy.with_image.per_class.values())
    accepted = policy.accepts(probs[test], has_image[test])
    correct = probs[test].argmax(axis=1) == y_idx[test]
    precision = correct[accepted].mean()
    assert precision >= TARGET - TOLERANCE, precision
    assert 0.1 < accepted.mean() < 0.9  # a useful share, neither nothing nor everything
    for path in (has_image[test], ~has_image[test]):
        assert correct[accepted & path].mean() >= TARGET - 2 * TOLERANCE
    # Its stricter threshold accepts a smaller share of its rows than the others get.
    fifth = probs[test].argmax(axis=1) == 5
    assert accepted[fifth].mean() < 0.5 * accepted[~fifth].mean()


def test_classes_with_few_rows_fall_back_to_the_global_threshold() -> None:
    probs, y_idx, has_image = calibrated_rows(3_000, seed=2)
    policy = ReviewPolicy.fit(probs, y_idx, has_image, TARGET, min_class_rows=10_000)
    assert policy.with_image.per_class == {} and policy.text_only.per_class == {}
    codes = np.array(CLASS_CODES[:3])
    assert (policy.with_image.for_codes(codes) == policy.with_image.global_threshold).all()


def test_decisions_and_their_reasons() -> None:
    policy = ReviewPolicy(
        TARGET, with_image=PathThresholds(0.8, {10: 0.5}), text_only=PathThresholds(0.9)
    )
    probs = np.full((5, len(CLASS_CODES)), 0.001)
    top = [0.85, 0.6, 0.6, 0.7, 0.95]  # rows 1 and 2 predict code 10 (index 0)
    predicted = [3, 0, 4, 4, 4]
    probs[np.arange(5), predicted] = top
    has_image = np.array([True, True, True, True, False])
    text = np.asarray(CLASS_CODES)[predicted]
    image = text.copy()
    image[3] = 2905  # row 3's image model disagrees
    decision, reason = policy.decide(probs, has_image, text, image)
    assert list(decision) == [AUTO, AUTO, REVIEW, REVIEW, AUTO]
    assert list(reason) == ["", "", LOW_CONFIDENCE, MODALITIES_DISAGREE, ""]
    probs[4, 4] = 0.5
    _, reason = policy.decide(probs, has_image, text, image)
    assert reason[4] == NO_IMAGE_LOW_CONFIDENCE


def test_policy_round_trips_through_json() -> None:
    probs, y_idx, has_image = calibrated_rows(5_000, seed=3)
    policy = ReviewPolicy.fit(probs, y_idx, has_image, TARGET, min_class_rows=100)
    assert ReviewPolicy.from_json(policy.to_json()) == policy


def test_the_cross_fitted_estimate_is_close_to_what_unseen_rows_give() -> None:
    probs, y_idx, has_image = calibrated_rows(20_000, seed=4)
    on_test = np.arange(len(y_idx)) % 2 == 0
    routing = fit_routing(probs, y_idx, has_image, on_test, ReviewParams(), seed=0)
    expected = routing.expected
    low, high = expected["precision_interval"]
    assert low <= expected["precision"] <= high
    assert expected["precision"] == pytest.approx(TARGET, abs=TOLERANCE)
    assert routing.expected_internal_test["rows"] == on_test.sum()
    paths = routing.expected_per_path
    assert paths["with_image"]["rows"] == has_image.sum()
    auto = paths["with_image"]["auto_rows"] + paths["text_only"]["auto_rows"]
    assert auto == expected["auto_rows"]
    curve = routing.curve
    assert curve[0]["coverage"] == pytest.approx(1.0)
    assert [p["coverage"] for p in curve] == sorted((p["coverage"] for p in curve), reverse=True)


def test_wilson_interval() -> None:
    low, high = wilson_interval(95, 100)
    assert low < 0.95 < high and high - low < 0.1
    assert wilson_interval(0, 0) == (0.0, 1.0)
