"""Progress of a run scored in this process: rows done, rate and time left.

On a terminal it is a progress bar (tqdm, as Ray Data shows for its engine); otherwise, in a
log, a line every :data:`LINE_INTERVAL_S` seconds and one when the run ends.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

#: Seconds between two progress lines in a log.
LINE_INTERVAL_S = 10.0


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{seconds:02d}s" if hours else f"{minutes}m{seconds:02d}s"


class RowProgress:
    """Counts the rows scored out of ``total`` and reports them.

    Args:
        total: rows this run scores.
        say: where a log line goes.
        interval: seconds between two log lines.
        terminal: show a bar rather than lines (default: whether stderr is a terminal).
    """

    def __init__(
        self, total: int, say: Callable[[str], None], interval: float = LINE_INTERVAL_S,
        terminal: bool | None = None,
    ) -> None:  # fmt: skip
        self.total = total
        self.say = say
        self.interval = interval
        self.done = self._reported = 0
        self.started = self._last = time.monotonic()
        self.bar = None
        if sys.stderr.isatty() if terminal is None else terminal:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="rows", desc="score", smoothing=0.1)

    def line(self) -> str:
        """Rows done, their share, the rate since the start and the time left at that rate."""
        elapsed = time.monotonic() - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = f", about {_duration((self.total - self.done) / rate)} left" if rate else ""
        share = self.done / self.total if self.total else 1.0
        return (
            f"scored {self.done:,} of {self.total:,} rows ({share:.0%}) in "
            f"{_duration(elapsed)}, {rate:,.1f} rows/s{left}"
        )

    def update(self, rows: int) -> None:
        self.done += rows
        if self.bar is not None:
            self.bar.update(rows)
        elif time.monotonic() - self._last >= self.interval:
            self._say()

    def _say(self) -> None:
        self._last, self._reported = time.monotonic(), self.done
        self.say(self.line())

    def close(self) -> None:
        """Close the bar, or say the last count if the last line did not."""
        if self.bar is not None:
            self.bar.close()
        elif self._reported != self.done or not self.done:
            self._say()
