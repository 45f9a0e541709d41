"""Stages chained on threads of their own, for the in-process engine.

Each stage runs on its own thread and hands its batches to the next through a small bounded
queue, so while the image model scores batch ``i`` the text model already scores batch
``i + 1``: on a machine with several cores the stages overlap as the Ray engine's actor
pools do, and a stage's output is what it would be alone (the same calls on the same
batches). The model runtimes release the GIL during their calls, which is where the time goes.

A stage that raises stops the chain: the error is raised to the consumer, in order, and
every thread ends.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

Stage = Callable[[Any], Any]
#: The name of every thread a chain starts.
THREAD_NAME = "scoring-stage"
#: Seconds between looks at the stop flag while a queue is full or empty.
_POLL_SECONDS = 0.05


class _End:
    """The item after the last batch."""


@dataclass(frozen=True)
class _Failure:
    """A stage's (or the batch source's) error, passed down the chain in place of a batch."""

    error: BaseException


class _Chain:
    """The queues between the stages and the flag that stops every thread."""

    def __init__(self, links: int, depth: int) -> None:
        self.queues: list[queue.Queue] = [queue.Queue(depth) for _ in range(links)]
        self.stop = threading.Event()

    def put(self, link: int, item: Any) -> bool:
        """Hands ``item`` on; False when the chain stopped first."""
        while not self.stop.is_set():
            try:
                self.queues[link].put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def get(self, link: int) -> Any:
        """The next item of ``link``; an end marker once the chain stopped."""
        while not self.stop.is_set():
            try:
                return self.queues[link].get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
        return _End()

    def feed(self, batches: Iterable[Any]) -> None:
        try:
            for batch in batches:
                if not self.put(0, batch):
                    return
        except BaseException as error:  # raised to the consumer, in order
            self.put(0, _Failure(error))
            return
        self.put(0, _End())

    def work(self, stage: Stage, link: int) -> None:
        while True:
            item = self.get(link)
            if not isinstance(item, (_End, _Failure)):
                try:
                    item = stage(item)
                except BaseException as error:
                    item = _Failure(error)
            if not self.put(link + 1, item) or isinstance(item, (_End, _Failure)):
                return


def pipelined(stages: list[Stage], batches: Iterable[Any], depth: int = 2) -> Iterator[Any]:
    """Each batch through every stage in order, the stages running side by side on threads.

    Args:
        stages: callables, each taking what the one before returns.
        batches: the inputs, read on a thread of their own.
        depth: batches waiting between two stages at most (bounds the memory held).

    Yields:
        Each batch's result, in the order of ``batches``.
    """
    chain = _Chain(len(stages) + 1, depth)
    threads = [threading.Thread(target=chain.feed, args=(batches,), name=THREAD_NAME)]
    threads += [
        threading.Thread(target=chain.work, args=(stage, link), name=THREAD_NAME)
        for link, stage in enumerate(stages)
    ]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = chain.get(len(stages))
            if isinstance(item, _End):
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        chain.stop.set()
        for thread in threads:
            thread.join()
