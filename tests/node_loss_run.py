"""Score on a two-node local cluster and remove the worker node mid-run (a test's subprocess).

Usage: node_loss_run.py BUNDLE INPUT IMAGES OUT SHARD_ROWS [KEY=VALUE ...]

The head node keeps one CPU and a worker node brings two, so the actor pools start across both;
once predictions appear, the worker node is removed (its raylet and workers killed). Prints
one JSON line after ``REPORT_PREFIX``: whether the node went while the run was going, and the
node counts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import ray
from fault_injection import predictions_written, run_with_fault
from ray.cluster_utils import Cluster

from rakuten_ray.scoring.run import run_scoring

#: Marks the report's line: Ray's own log lines reach stdout around it.
REPORT_PREFIX = "node-loss-report: "


def alive_nodes() -> int:
    return sum(1 for node in ray.nodes() if node["Alive"])


def main(argv: list[str]) -> None:
    bundle, source, images, out = (Path(arg) for arg in argv[:4])
    shard_rows, overrides = int(argv[4]), tuple(argv[5:])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        report = score_through_node_loss(
            cluster, bundle, source, images, out, shard_rows, overrides
        )
        print(REPORT_PREFIX + json.dumps(report), flush=True)
    finally:
        # Always: a head left running would be joined by any later plain ``ray.init()``.
        ray.shutdown()
        cluster.shutdown()


def score_through_node_loss(
    cluster: Cluster, bundle: Path, source: Path, images: Path, out: Path, shard_rows: int,
    overrides: tuple[str, ...],
) -> dict:  # fmt: skip
    """Score with a second node that is removed once predictions appear; the run's report."""
    worker = cluster.add_node(num_cpus=2)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, logging_level="ERROR")
    before = alive_nodes()

    def score() -> None:
        run_scoring(
            bundle, source, images, out, engine="ray", overrides=overrides,
            rows_per_shard=shard_rows,
        )  # fmt: skip

    def remove_worker() -> bool:
        cluster.remove_node(worker)
        return True

    landed = run_with_fault(score, lambda: predictions_written(out), remove_worker)
    return {"node_removed_mid_run": landed, "nodes_before": before, "nodes_after": alive_nodes()}


if __name__ == "__main__":
    main(sys.argv[1:])
