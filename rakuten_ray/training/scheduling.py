"""Running jobs side by side while the cluster holds their resources together.

Base models train concurrently when their resources fit in the cluster at once (each its own
Ray task or Ray Train run), up to a cap; a model that does not fit waits for running ones to
finish, and models further down the list that fit start meanwhile. A job always starts when
nothing else runs, even if it does not fit the cluster as it is now: an autoscaling cluster
grows when Ray asks for what it lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")
Resources = Mapping[str, float]


@dataclass(frozen=True)
class Job(Generic[T]):
    """A named piece of work and the resources (``CPU``, ``GPU``) it holds while it runs."""

    name: str
    resources: Resources
    run: Callable[[], T]


def _fits(held: dict[str, float], extra: Resources, capacity: Resources) -> bool:
    return all(held.get(k, 0.0) + v <= capacity.get(k, 0.0) + 1e-9 for k, v in extra.items() if v)


def run_side_by_side(
    jobs: list[Job[T]], capacity: Resources, limit: int
) -> dict[str, T]:
    """Run ``jobs`` in threads, at most ``limit`` at once and while their resources fit
    ``capacity``, in list order where they can; returns each job's result by name.

    The first error is raised as soon as its job ends; jobs not yet started never start.
    """
    pending, running = list(jobs), {}
    results: dict[str, T] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, limit), thread_name_prefix="job")
    try:
        while pending or running:
            held: dict[str, float] = {}
            for job in running.values():
                for key, value in job.resources.items():
                    held[key] = held.get(key, 0.0) + value
            for job in list(pending):
                if len(running) >= limit:
                    break
                if running and not _fits(held, job.resources, capacity):
                    continue
                pending.remove(job)
                future: Future[T] = pool.submit(job.run)
                running[future] = job
                for key, value in job.resources.items():
                    held[key] = held.get(key, 0.0) + value
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                results[running.pop(future).name] = future.result()
    finally:
        pool.shutdown(wait=not pending and not running, cancel_futures=True)
    return results
