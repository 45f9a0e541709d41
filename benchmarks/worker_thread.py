"""An image model's training step on the main thread against a second thread of one process.

Ray Train runs the training function, and Ray Data a stage's ``__call__``, on a thread of
their own in the worker process; plain PyTorch runs on the main thread. glibc gives each
further thread its own malloc arenas, which hand large blocks back to the kernel as soon as
they empty, so a thread that allocates tens of MB per layer pays fresh page faults every
step. This measures the step (the one ``image_layout.py`` times, channels-last) of the
config's first image model both ways, alternating, in one process:

    .venv/bin/python benchmarks/worker_thread.py [--repeats 4]
    MALLOC_ARENA_MAX=1 .venv/bin/python benchmarks/worker_thread.py --name worker_thread_one_arena

Prints the seconds per step and writes ``benchmarks/results/<name>.json``.
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable

import common
import torch
from image_layout import THREADS, fastest, training_step

from rakuten_ray.config import load_config


def on_second_thread(step: Callable[[], None], repeats: int) -> float:
    """:func:`fastest` of ``step``, run on a new thread with this process's torch threads."""
    found: list[float] = []

    def run() -> None:
        torch.set_num_threads(THREADS)
        found.append(fastest(step, repeats))

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return found[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(common.REPO / "configs" / "demo.yaml"))
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2, help="main/second-thread pairs")
    parser.add_argument("--name", default="worker_thread", help="results file name")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    spec = load_config(args.config).image_models[0]
    _, step = training_step(spec, torch.channels_last)
    rounds = []
    for _ in range(args.rounds):
        found = {
            "main_thread_s": fastest(step, args.repeats),
            "second_thread_s": on_second_thread(step, args.repeats),
        }
        print(f"[bench] {spec.name} {spec.image_size} px, seconds per step: {found}", flush=True)
        rounds.append(found)
    payload = {
        "model": spec.name, "image_size": spec.image_size, "batch": spec.train.batch_size,
        "threads": THREADS, "repeats": args.repeats,
        "malloc_arena_max": os.environ.get("MALLOC_ARENA_MAX"), "rounds": rounds,
        "machine": common.machine(),
    }  # fmt: skip
    common.write_results(args.name, payload)


if __name__ == "__main__":
    main()
