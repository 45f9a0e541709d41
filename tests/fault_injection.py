"""Injecting a fault into a scoring or training run while it goes on (used by the tests and
their scripts)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from rakuten_ray.layout import ScoringLayout

#: Longest a disturbed run may take on a loaded 2-core machine.
RUN_TIMEOUT_S = 600
#: Process title of a Ray Train worker (one per worker of a run's group).
TRAIN_WORKER = "ray::RayTrainWorker"


def predictions_written(out: Path) -> bool:
    """At least one prediction file exists: the run is under way."""
    return any(ScoringLayout(out).predictions.glob("*.parquet"))


def checkpoint_registered(storage: Path) -> bool:
    """Whether Ray Train's controller has recorded at least one checkpoint of the run whose
    storage folder is ``storage``."""
    snapshot = storage / "checkpoint_manager_snapshot.json"
    try:
        state = json.loads(snapshot.read_text())
    except (OSError, ValueError):
        return False
    return state.get("latest_checkpoint_result") is not None


def run_with_fault(
    score: Callable[[], None], ready: Callable[[], bool], fault: Callable[[], bool]
) -> bool:
    """Run ``score`` in a thread; once ``ready()`` holds while it still runs, call ``fault``.

    Returns:
        Whether the fault was injected while the run was still going.
    """
    landed: dict[str, bool] = {}
    failures: list[BaseException] = []

    def run() -> None:
        try:
            score()
        except BaseException as error:  # re-raised in the caller's thread below
            failures.append(error)

    def inject() -> None:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while worker.is_alive() and time.monotonic() < deadline:
            if ready():
                landed["mid_run"] = worker.is_alive() and fault()
                return
            time.sleep(0.1)

    worker = threading.Thread(target=run)
    injector = threading.Thread(target=inject, daemon=True)
    worker.start()
    injector.start()
    worker.join(RUN_TIMEOUT_S)
    injector.join(5)
    assert not worker.is_alive(), "the disturbed run did not finish"
    if failures:
        raise failures[0]
    return landed.get("mid_run", False)


def _parent(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:  # the process ended meanwhile
        return None
    return int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces and parentheses


def _title(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace")


def local_ray_workers(title: str) -> list[int]:
    """PIDs of Ray workers started for this process's local Ray instance, by process title.

    A worker sets its title to ``ray::<actor class>`` and is a child of the raylet, which is
    a child of the driver that started Ray; other Ray instances on the machine are ignored.
    """
    pids = [int(name) for name in os.listdir("/proc") if name.isdigit()]
    raylets = {pid for pid in pids if _parent(pid) == os.getpid() and "raylet" in _title(pid)}
    return [pid for pid in pids if _parent(pid) in raylets and title in _title(pid)]


def train_workers() -> list[int]:
    """PIDs of the Ray Train workers of this process's local Ray instance."""
    return local_ray_workers(TRAIN_WORKER)


def checkpointed_with_workers(storage: Path, workers: int) -> bool:
    """The run in ``storage`` has a registered checkpoint and ``workers`` workers running: a
    worker killed now dies mid-run, after an epoch it can resume from."""
    return checkpoint_registered(storage) and len(train_workers()) == workers


def kill_train_worker() -> bool:
    """SIGKILL one Ray Train worker (as a crash or an OOM kill would); under DDP the others
    of its group are left to notice.

    Returns:
        Whether a worker was there to kill.
    """
    pids = train_workers()
    if not pids:
        return False
    os.kill(max(pids), signal.SIGKILL)
    return True
