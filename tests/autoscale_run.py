"""Train on a local cluster that gains a node during the run (a test's subprocess).

Usage: autoscale_run.py CONFIG DATA OUT

The cluster starts as one head with one CPU: room for one single-CPU model at a time. Training
starts; once one Ray Train run holds its placement group while another's waits for room, a
second one-CPU node joins, as an autoscaler would add it for the waiting request. Prints one
JSON line after ``REPORT_PREFIX``: what the placement groups did before and after the node
joined.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import ray
from ray.cluster_utils import Cluster

from rakuten_ray.config import load_config
from rakuten_ray.training.protocol import run_training

#: Marks the report's line: Ray's own log lines reach stdout around it.
REPORT_PREFIX = "autoscale-report: "
POLL_S = 0.2


def placement_states() -> list[str]:
    """The state of every placement group not yet removed (``CREATED``, ``PENDING``...)."""
    table = ray.util.placement_group_table().values()
    return [group["state"] for group in table if group["state"] != "REMOVED"]


class Watch:
    """Samples the cluster's placement groups and adds a node once one waits beside one held."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.done = threading.Event()
        self.most_held_before = 0
        self.most_held_after = 0
        self.waited_before = False
        self.node_added = False

    def run(self) -> None:
        while not self.done.is_set():
            states = placement_states()
            held = states.count("CREATED")
            if self.node_added:
                self.most_held_after = max(self.most_held_after, held)
            else:
                self.most_held_before = max(self.most_held_before, held)
                if held and "PENDING" in states:
                    self.waited_before = True
                    self.cluster.add_node(num_cpus=1)
                    self.node_added = True
            time.sleep(POLL_S)


def main(argv: list[str]) -> None:
    config_path, data, out = (Path(arg) for arg in argv[:3])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        ray.init(address=cluster.address, logging_level="ERROR")
        watch, failed = Watch(cluster), []

        def train() -> None:
            try:
                run_training(load_config(config_path), data, out, log=lambda _: None)
            except BaseException as error:  # raised again in the main thread
                failed.append(error)
            finally:
                watch.done.set()

        # Training in a thread: the main thread watches, since only it may start a node
        # (a node's processes install signal handlers).
        trainer = threading.Thread(target=train)
        trainer.start()
        watch.run()
        trainer.join()
        if failed:
            raise failed[0]
        report = {
            "waited_before_node": watch.waited_before,
            "most_held_before_node": watch.most_held_before,
            "node_added": watch.node_added,
            "most_held_after_node": watch.most_held_after,
            "nodes": sum(1 for node in ray.nodes() if node["Alive"]),
        }
        print(REPORT_PREFIX + json.dumps(report), flush=True)
    finally:
        # Always: a head left running would be joined by any later plain ``ray.init()``.
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1:])
