"""Base models side by side: jobs start while their resources fit, up to the cap."""

from __future__ import annotations

import threading
import time

import pytest

from rakuten_ray.training.scheduling import Job, run_side_by_side


class Recorder:
    """Records which jobs overlap and the resources they held together."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running: dict[str, dict[str, float]] = {}
        self.peak: dict[str, float] = {}
        self.most_at_once = 0
        self.started: list[str] = []

    def job(self, name: str, resources: dict[str, float], seconds: float = 0.05) -> Job[str]:
        def run() -> str:
            with self.lock:
                self.started.append(name)
                self.running[name] = resources
                self.most_at_once = max(self.most_at_once, len(self.running))
                for key in resources:
                    total = sum(r.get(key, 0.0) for r in self.running.values())
                    self.peak[key] = max(self.peak.get(key, 0.0), total)
            time.sleep(seconds)
            with self.lock:
                del self.running[name]
            return name.upper()

        return Job(name, resources, run)


def test_jobs_that_fit_run_together_and_others_wait() -> None:
    recorder = Recorder()
    jobs = [
        recorder.job("tfidf", {"CPU": 1}),
        recorder.job("big", {"CPU": 2}),
        recorder.job("small", {"CPU": 1}),
    ]
    results = run_side_by_side(jobs, {"CPU": 2}, limit=4)
    assert results == {"tfidf": "TFIDF", "big": "BIG", "small": "SMALL"}
    assert recorder.peak["CPU"] <= 2
    # "big" does not fit beside "tfidf": "small", further down the list, starts first.
    assert recorder.started[:2] == ["tfidf", "small"]
    assert recorder.most_at_once == 2


def test_the_cap_holds_even_when_resources_fit() -> None:
    recorder = Recorder()
    jobs = [recorder.job(f"m{i}", {"CPU": 1}) for i in range(4)]
    run_side_by_side(jobs, {"CPU": 8}, limit=1)
    assert recorder.most_at_once == 1
    assert recorder.started == ["m0", "m1", "m2", "m3"]


def test_a_job_larger_than_the_cluster_still_runs_alone() -> None:
    """An autoscaling cluster grows when asked: a lone job starts whatever it needs."""
    recorder = Recorder()
    jobs = [recorder.job("gpu", {"CPU": 4, "GPU": 4}), recorder.job("cpu", {"CPU": 1})]
    assert run_side_by_side(jobs, {"CPU": 2}, limit=2) == {"gpu": "GPU", "cpu": "CPU"}
    assert recorder.most_at_once == 1


def test_the_first_error_stops_the_schedule() -> None:
    recorder = Recorder()

    def fail() -> str:
        raise RuntimeError("model m1 failed")

    jobs = [Job("m1", {"CPU": 2}, fail), recorder.job("m2", {"CPU": 2})]
    with pytest.raises(RuntimeError, match="m1 failed"):
        run_side_by_side(jobs, {"CPU": 2}, limit=2)
    assert recorder.started == []
