"""Timing the named phases of a long job, with one line per phase as it starts and ends."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class PhaseClock:
    """Times each named phase and says when it starts and how long it took."""

    def __init__(self, say: Callable[[str], None] = print, label: str = "") -> None:
        self.say = say
        self.label = label
        self.seconds: dict[str, float] = {}
        self.started = time.perf_counter()

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time the body as phase ``name``."""
        self.say(f"{self.label}{name} ...")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        self.say(
            f"{self.label}{name} done in {self.seconds[name]:.0f}s (total {self.total:.0f}s)"
        )

    @property
    def total(self) -> float:
        """Seconds since the clock started."""
        return time.perf_counter() - self.started
