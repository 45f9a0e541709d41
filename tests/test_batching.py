"""Fixed-shape batches: every call sees the same size, outputs keep the input order."""

from __future__ import annotations

import numpy as np
import pytest

from rakuten_ray.batching import fixed_batches, map_fixed_batches


@pytest.mark.parametrize(("count", "size"), [(0, 4), (1, 4), (4, 4), (9, 4), (5, 1)])
def test_batches_cover_every_item_once_at_one_size(count: int, size: int) -> None:
    seen: list[int] = []
    for items, take in fixed_batches(count, size):
        real = list(range(count))[items]
        assert len(take) == size and 0 < len(real) <= size
        padded = [real[i] for i in take]
        assert padded[: len(real)] == real and set(padded[len(real) :]) <= {real[-1]}
        seen += real
    assert seen == list(range(count))


def test_a_batch_size_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        list(fixed_batches(3, 0))


def test_map_keeps_row_order_and_calls_with_one_shape() -> None:
    rows = np.arange(22, dtype=float).reshape(11, 2)
    shapes: list[tuple[int, ...]] = []

    def compute(batch: np.ndarray) -> np.ndarray:
        shapes.append(batch.shape)
        return np.stack([batch.sum(axis=1), batch[:, 0]], axis=1)

    out = map_fixed_batches(compute, rows, 4, width=2)
    np.testing.assert_array_equal(out, np.stack([rows.sum(axis=1), rows[:, 0]], axis=1))
    assert shapes == [(4, 2)] * 3


def test_map_on_no_rows_does_not_call() -> None:
    def compute(batch: np.ndarray) -> np.ndarray:
        raise AssertionError("called on no rows")

    assert map_fixed_batches(compute, np.empty((0, 3)), 4, width=5).shape == (0, 5)
