"""Injected faults during Ray scoring: a killed image actor, a lost worker node.

Each disturbed run must finish with exactly the output of an undisturbed one. Scoring is
byte-identical across runs and engines (fixed-shape model calls), so "the same output" is
checked bit for bit against an in-process run.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pandas as pd
import pytest
from fault_injection import local_ray_workers, predictions_written, run_with_fault
from helpers import assert_same_predictions, run_reporting_script
from node_loss_run import REPORT_PREFIX

from rakuten_ray.catalog import X_TEST_FILE
from rakuten_ray.scoring.run import run_scoring

pytestmark = pytest.mark.slow

#: The tiny catalogue's 60 test rows, repeated: enough batches for a fault to land mid-run.
REPEATS = 10
#: Small staged shards: many read blocks, so prediction files appear while the run goes on.
SHARD_ROWS = 50
#: Pools that fit on the head node alone (1 CPU, reads and writes included), so that the
#: actors lost with the worker node can always restart wherever they were.
OVERRIDES = (
    "scoring.text.batch_size=32", "scoring.image.batch_size=16", "scoring.text.num_cpus=0.25",
    "scoring.image_prep.num_cpus=0.2", "scoring.image.num_cpus=0.25", "scoring.fusion.num_cpus=0.1",
    # Files of 50 rows: predictions land while the model actors are still at work.
    "scoring.rows_per_output_file=50",
)  # fmt: skip
NODE_LOSS_SCRIPT = Path(__file__).with_name("node_loss_run.py")
FAULT_TIMEOUT_S = 420


@pytest.fixture(scope="module")
def long_input(tiny_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = pd.read_csv(tiny_catalogue / X_TEST_FILE, index_col=0, dtype=str, keep_default_na=False)
    repeated = pd.concat([rows] * REPEATS, ignore_index=True)
    path = tmp_path_factory.mktemp("fault_input") / "rows.csv"
    repeated.to_csv(path)
    return path


@pytest.fixture(scope="module")
def undisturbed(
    tiny_run: Path, tiny_catalogue: Path, long_input: Path, tmp_path_factory
) -> Path:  # fmt: skip
    out = tmp_path_factory.mktemp("undisturbed") / "out"
    run_scoring(
        tiny_run / "bundle", long_input, tiny_catalogue / "images/image_test", out,
        engine="local", overrides=OVERRIDES, rows_per_shard=SHARD_ROWS,
    )  # fmt: skip
    return out


def kill_image_actor() -> bool:
    """SIGKILL the process of the image-stage actor (as a crash or an OOM kill would)."""
    for pid in local_ray_workers("ray::MapWorker(MapBatches(ImageStage))"):
        os.kill(pid, signal.SIGKILL)
        return True
    return False


def test_killed_image_actor_leaves_the_output_unchanged(
    tiny_run: Path, tiny_catalogue: Path, long_input: Path, undisturbed: Path, ray_local,
    tmp_path: Path,
) -> None:  # fmt: skip
    out = tmp_path / "out"

    def score() -> None:
        run_scoring(
            tiny_run / "bundle", long_input, tiny_catalogue / "images/image_test", out,
            engine="ray", overrides=OVERRIDES, rows_per_shard=SHARD_ROWS,
        )  # fmt: skip

    landed = run_with_fault(score, lambda: predictions_written(out), kill_image_actor)
    assert landed, "the image actor was not killed while the run was going"
    assert_same_predictions(out, undisturbed)


def test_lost_worker_node_leaves_the_output_unchanged(
    tiny_run: Path, tiny_catalogue: Path, long_input: Path, undisturbed: Path, tmp_path: Path
) -> None:
    """A two-node cluster (``ray.cluster_utils.Cluster``) loses a node mid-run.

    The cluster runs in its own process: this one is already connected to the session's
    Ray instance.
    """
    out = tmp_path / "out"
    command = [
        sys.executable, str(NODE_LOSS_SCRIPT), str(tiny_run / "bundle"), str(long_input),
        str(tiny_catalogue / "images/image_test"), str(out), str(SHARD_ROWS), *OVERRIDES,
    ]  # fmt: skip
    report = run_reporting_script(command, FAULT_TIMEOUT_S, REPORT_PREFIX)
    assert report["node_removed_mid_run"], report
    assert report["nodes_after"] == report["nodes_before"] - 1, report
    assert_same_predictions(out, undisturbed)
