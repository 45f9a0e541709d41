"""Quality bounds that a model blind to its input cannot meet.

A model that ignores its input does best on a set of rows by predicting their class shares:
its log loss is then the entropy of those shares, and its accuracy at most the share of the
largest class. Bounds such as "log loss below log(27)" or "F1 above 1/27" let such a model
pass whenever the classes are unbalanced; these compare with what it reaches on the very rows
evaluated, less a margin for the luck of a small sample.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_shares(labels: Sequence[object] | np.ndarray) -> np.ndarray:
    """Each class's share of ``labels`` (classes absent from them are left out)."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    return counts / counts.sum()


def assert_log_loss_beats_class_shares(
    log_loss: float, labels: Sequence[object] | np.ndarray, margin: float
) -> None:
    """``log_loss`` on the rows labelled ``labels`` lies at least ``margin`` (nats) below the
    entropy of their class shares, the least log loss a blind model reaches on them."""
    shares = class_shares(labels)
    entropy = float(-(shares * np.log(shares)).sum())
    assert log_loss < entropy - margin, (
        f"log loss {log_loss:.4f} is not {margin} below {entropy:.4f}, the class shares' "
        f"entropy on these {len(labels)} rows"
    )


def assert_accuracy_beats_majority(
    accuracy: float, labels: Sequence[object] | np.ndarray, margin: float
) -> None:
    """``accuracy`` on the rows labelled ``labels`` is at least ``margin`` above the largest
    class's share of them, the best accuracy a blind model reaches on them."""
    majority = float(class_shares(labels).max())
    assert accuracy > majority + margin, (
        f"accuracy {accuracy:.4f} is not {margin} above {majority:.4f}, the largest class's "
        f"share of these {len(labels)} rows"
    )
