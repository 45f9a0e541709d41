"""Fixed-shape batches, so that a row's scores depend on that row alone.

CPU kernels choose their algorithm from a tensor's shape: the same image scored in a batch of
8 and in a batch of 13 can differ in the last bits (a single row can even take a different
code path). Scoring engines cut rows into batches differently (Ray Data forms its batches from
whatever blocks arrive), so to give byte-identical predictions whatever the engine or the run,
every model call sees batches of exactly one size: the last one is padded by repeating its
final row, and the padding's outputs are dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np


def fixed_batches(count: int, size: int) -> Iterator[tuple[slice, np.ndarray]]:
    """Cover ``count`` items with batches of exactly ``size``.

    Yields:
        ``(items, take)``: ``items`` is the slice of real items in this batch, and ``take``
        (``size`` long) indexes into those items, repeating the last one as padding.
    """
    if size < 1:
        raise ValueError(f"batch size must be at least 1, got {size}")
    for start in range(0, count, size):
        real = min(size, count - start)
        take = np.minimum(np.arange(size), real - 1)
        yield slice(start, start + real), take


def map_fixed_batches(
    compute: Callable[[np.ndarray], np.ndarray], rows: np.ndarray, size: int, width: int
) -> np.ndarray:
    """Apply ``compute`` to ``rows`` (first axis = rows) in batches of exactly ``size``.

    ``compute`` returns ``width`` values per row it is given; the result holds those of the
    real rows, in order, shape ``(len(rows), width)`` (``compute`` is not called on no rows).
    """
    out = np.empty((len(rows), width))
    for items, take in fixed_batches(len(rows), size):
        out[items] = compute(rows[items][take])[: items.stop - items.start]
    return out
