"""Base models side by side: jobs start in list order, up to the cap (how they wait for the
cluster's resources is Ray's part: ``test_training_paths.py`` trains on a cluster that grows)."""

from __future__ import annotations

import threading
import time

import pytest

from rakuten_ray.training.scheduling import Job, run_side_by_side


class Recorder:
    """Records the order jobs start in and how many run at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.most_at_once = 0
        self.started: list[str] = []

    def job(
        self, name: str, until: threading.Event | None = None, tell: threading.Event | None = None
    ) -> Job[str]:
        """A job that sets ``tell`` once started, then runs until ``until`` is set (at most
        10 s), else for 50 ms."""

        def run() -> str:
            with self.lock:
                self.started.append(name)
                self.running.add(name)
                self.most_at_once = max(self.most_at_once, len(self.running))
            if tell is not None:
                tell.set()
            if until is None:
                time.sleep(0.05)
            else:
                until.wait(10)
            with self.lock:
                self.running.discard(name)
            return name.upper()

        return Job(name, run)


def test_jobs_run_together_up_to_the_cap() -> None:
    recorder, second_started = Recorder(), threading.Event()
    jobs = [
        recorder.job("first", until=second_started),
        recorder.job("second", tell=second_started),
        recorder.job("third"),
    ]
    results = run_side_by_side(jobs, limit=2)
    assert results == {"first": "FIRST", "second": "SECOND", "third": "THIRD"}
    # "first" ran until "second" had started beside it; "third" waited for a free slot.
    assert recorder.most_at_once == 2
    assert recorder.started == ["first", "second", "third"]


def test_the_cap_holds() -> None:
    recorder = Recorder()
    jobs = [recorder.job(f"m{i}") for i in range(4)]
    run_side_by_side(jobs, limit=1)
    assert recorder.most_at_once == 1
    assert recorder.started == ["m0", "m1", "m2", "m3"]


def test_the_first_error_stops_the_schedule() -> None:
    recorder = Recorder()

    def fail() -> str:
        raise RuntimeError("model m1 failed")

    jobs = [Job("m1", fail), recorder.job("m2")]
    with pytest.raises(RuntimeError, match="m1 failed"):
        run_side_by_side(jobs, limit=1)
    assert recorder.started == []
