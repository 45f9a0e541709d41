"""Stages chained on threads (the in-process engine's scheduling): order, overlap, errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from rakuten_ray.scoring.pipelining import THREAD_NAME, pipelined

WAIT_SECONDS = 10


def _chain_threads() -> list[threading.Thread]:
    """The chains' threads still alive."""
    return [thread for thread in threading.enumerate() if thread.name == THREAD_NAME]


def test_each_batch_goes_through_every_stage_in_order() -> None:
    stages = [lambda x: x + 1, lambda x: x * 10, lambda x: x - 3]
    assert list(pipelined(stages, range(50))) == [(x + 1) * 10 - 3 for x in range(50)]
    assert list(pipelined(stages, [])) == []


def test_two_stages_work_at_the_same_time() -> None:
    """The second stage scores batch 0 while the first holds batch 1: each stage waits for
    the other to be busy, which only overlapping stages get past."""
    first_busy, second_busy = threading.Event(), threading.Event()

    def first(x: int) -> int:
        if x == 1:
            first_busy.set()
            assert second_busy.wait(WAIT_SECONDS), "the second stage never ran beside the first"
        return x

    def second(x: int) -> int:
        if x == 0:
            second_busy.set()
            assert first_busy.wait(WAIT_SECONDS), "the first stage never ran beside the second"
        return x

    assert list(pipelined([first, second], range(3))) == [0, 1, 2]


def test_a_failing_stage_raises_after_the_batches_before_it_and_ends_every_thread() -> None:
    def fails_on_three(x: int) -> int:
        if x == 3:
            raise ValueError("batch 3 is bad")
        return x

    got = []
    with pytest.raises(ValueError, match="batch 3 is bad"):
        for item in pipelined([lambda x: x, fails_on_three, lambda x: x], range(100)):
            got.append(item)
    assert got == [0, 1, 2]
    assert _chain_threads() == []


def test_a_failing_source_raises_too() -> None:
    def source() -> Iterator[int]:
        yield 0
        raise OSError("shard unreadable")

    with pytest.raises(OSError, match="shard unreadable"):
        list(pipelined([lambda x: x], source()))


def test_a_consumer_that_stops_early_ends_every_thread() -> None:
    results = pipelined([lambda x: x, lambda x: x], range(1000))
    assert next(results) == 0
    results.close()
    assert _chain_threads() == []
