"""Running jobs side by side, each waiting in Ray for the resources it asks for.

Base models train concurrently, up to a cap, started in list order. The schedule never reads
the cluster's size: each job's work asks Ray for what it holds (a Ray Train run's placement
group of its workers, a Ray task's CPUs and GPUs) and Ray starts it once the cluster has
them. A model that does not fit waits in Ray while the others run, and starts when a
running one ends or a node joins; on an autoscaling cluster the waiting requests are the
demand the autoscaler adds nodes for, so models run side by side as soon as nodes are up.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Job(Generic[T]):
    """A named piece of work that asks Ray for its own resources."""

    name: str
    run: Callable[[], T]


def run_side_by_side(jobs: list[Job[T]], limit: int) -> dict[str, T]:
    """Run ``jobs`` in threads, at most ``limit`` at once, started in list order; returns
    each job's result by name.

    The first error is raised as soon as its job ends; jobs not yet started never start.
    """
    pool = ThreadPoolExecutor(max_workers=max(1, limit), thread_name_prefix="job")
    futures = {pool.submit(job.run): job.name for job in jobs}
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        for future in done:
            future.result()  # the first error, if any, before waiting for the rest
        return {name: future.result() for future, name in futures.items()}
    finally:
        pool.shutdown(wait=all(f.done() for f in futures), cancel_futures=True)
