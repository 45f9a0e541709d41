"""Connecting to a Ray cluster, or starting a local one, once per process."""

from __future__ import annotations

import os


def ensure_ray(address: str | None = None) -> None:
    """Connect to ``address`` (``auto``, ``ray://...`` or ``host:port``), else start Ray locally.

    Inside a ``ray job submit`` the job's own cluster is found through ``RAY_ADDRESS``. With
    neither, a new local instance starts: left to itself, ``ray.init`` would join a cluster
    that ``ray start`` left running on the machine (another user's, or a test's).
    """
    import ray

    if ray.is_initialized():
        return
    # Tokenizers spawn their own thread pool per process; inside Ray actors that oversubscribes
    # the CPUs the actor was given.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ray.init(
        address=address or os.environ.get("RAY_ADDRESS") or "local",
        runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "false"}},
        logging_level="WARNING",
    )
