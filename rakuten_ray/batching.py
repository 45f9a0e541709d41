"""Fixed-shape batches, so that a row's scores depend on that row alone.

CPU kernels choose their algorithm from a tensor's shape: the same image scored in a batch of
8 and in a batch of 13 can differ in the last bits (a single row can even take a different
code path). Scoring engines cut rows into batches differently (Ray Data forms its batches from
whatever blocks arrive), so to give byte-identical predictions whatever the engine or the run,
every model call sees batches of exactly one size: the last one is padded by repeating its
final row, and the padding's outputs are dropped.

Texts also vary in length. Each is padded to its own token count rounded up to
:data:`LENGTH_STEP`, and texts of one padded length share calls (:func:`plan_length_calls`).
A call's row count may depend on that length (a budget of tokens per call) but on nothing
else, so a text's call shape is still set by the text alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

#: Texts are padded to a multiple of this many tokens: short titles stay cheap, and few
#: distinct lengths means few partly filled calls.
LENGTH_STEP = 16


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


def rows_per_call(length: int, rows: int, tokens_per_call: int | None) -> int:
    """Rows of each call on texts padded to ``length`` tokens: ``rows`` at every length, or,
    with a budget, as many as ``tokens_per_call`` holds (at least one)."""
    return rows if tokens_per_call is None else max(1, tokens_per_call // length)


@dataclass(frozen=True)
class LengthCall:
    """One model call on texts padded to ``length`` tokens."""

    length: int
    #: The texts it scores, as positions in the plan's input.
    members: np.ndarray
    #: Positions in ``members``, as many as the call has rows: the last one repeats as padding.
    take: np.ndarray

    @property
    def rows(self) -> np.ndarray:
        """The call's rows, padding included, as positions in the plan's input."""
        return self.members[self.take]


@dataclass(frozen=True)
class LengthPlan:
    """The model calls that score a batch of texts, and the tokens they compute."""

    #: Each text's token count (after truncation).
    tokens: np.ndarray
    #: Each text's length once padded: its token count rounded up to :data:`LENGTH_STEP`.
    padded: np.ndarray
    calls: list[LengthCall]

    @property
    def tokens_needed(self) -> int:
        """Tokens of the texts themselves."""
        return int(self.tokens.sum())

    @property
    def tokens_rounded(self) -> int:
        """Tokens of the texts at their padded lengths (the padding rows left out)."""
        return int(self.padded.sum())

    @property
    def tokens_computed(self) -> int:
        """Tokens the calls compute: every row of every call, padding rows included."""
        return sum(call.length * len(call.take) for call in self.calls)


def plan_length_calls(
    tokens: np.ndarray, max_length: int, rows: int, tokens_per_call: int | None = None
) -> LengthPlan:
    """Calls that cover texts of ``tokens`` tokens each, shortest padded length first.

    Each text is padded to its token count rounded up to :data:`LENGTH_STEP` (``max_length``
    at most); the texts of one padded length run in calls of exactly
    :func:`rows_per_call` rows, the last call padded by repeating a text.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    padded = np.minimum(-(-tokens // LENGTH_STEP) * LENGTH_STEP, max_length)
    calls = []
    for length in np.unique(padded).tolist():
        members = np.flatnonzero(padded == length)
        size = rows_per_call(length, rows, tokens_per_call)
        for items, take in fixed_batches(len(members), size):
            calls.append(LengthCall(length, members[items], take))
    return LengthPlan(tokens, padded, calls)
