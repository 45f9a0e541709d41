"""The quality bounds of the tests: a model blind to its input fails them, one that learned
passes."""

from __future__ import annotations

import numpy as np
import pytest
from quality_bounds import assert_accuracy_beats_majority, assert_log_loss_beats_class_shares

from rakuten_ray.metrics import accuracy, log_loss

#: Unbalanced labels of 27 classes: a third of the rows in class 0.
LABELS = np.concatenate([np.zeros(100, dtype=int), np.arange(200) % 27])


def test_a_model_that_predicts_the_class_shares_fails_both_bounds() -> None:
    shares = np.bincount(LABELS, minlength=27) / len(LABELS)
    blind = np.tile(shares, (len(LABELS), 1))
    # Far below log(27) and far above 1/27: what the bounds it replaces let through.
    assert log_loss(blind, LABELS) < np.log(27) - 0.4
    assert accuracy(LABELS, blind.argmax(axis=1)) > 3 / 27
    with pytest.raises(AssertionError, match="entropy on these 300 rows"):
        assert_log_loss_beats_class_shares(log_loss(blind, LABELS), LABELS, margin=0.0)
    with pytest.raises(AssertionError, match="largest class's share of these 300 rows"):
        assert_accuracy_beats_majority(accuracy(LABELS, blind.argmax(axis=1)), LABELS, margin=0.0)


def test_a_model_that_learned_passes_both_bounds() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(len(LABELS), 27))
    logits[np.arange(len(LABELS)), LABELS] += 4.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert_log_loss_beats_class_shares(log_loss(probs, LABELS), LABELS, margin=1.0)
    assert_accuracy_beats_majority(accuracy(LABELS, probs.argmax(axis=1)), LABELS, margin=0.3)
