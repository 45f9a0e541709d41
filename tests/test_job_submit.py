"""The job entrypoints (``jobs/train.py``, ``jobs/score.py``, ``jobs/serve.py``) submitted
with ``ray job submit`` to a real local Ray cluster; the scoring job reads its bundle, input
and images from object storage and publishes its output there (the session's S3-protocol
server, reached through the ``AWS_*`` variables the cluster inherits).

The cluster is a separate ``ray start --head`` next to the session's in-process Ray
(``ray_local``) and other Ray instances on the machine: it gets its own ports and its own
temp dir, and teardown ends only the processes that name that temp dir, never ``ray stop``
(which would kill every Ray process on the machine). The module's jobs share it.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from helpers import REPO_ROOT, labelled_parquet_table, read_predictions
from object_store import ObjectStore

RAY = Path(sys.executable).parent / "ray"
JOB_TIMEOUT_S = 600
#: Kept out of the working-dir upload (most are also in .gitignore, which Ray honours).
UPLOAD_EXCLUDES = [
    ".venv", ".git", "**/__pycache__", "*.egg-info", ".pytest_cache", ".ruff_cache",
    ".hypothesis", "demo_run", "runs", "build",
]  # fmt: skip


@dataclass(frozen=True)
class LocalCluster:
    """A running ``ray start --head``: its job API address, temp dir and client environment."""

    dashboard_url: str
    temp_dir: Path
    env: dict[str, str]


def _free_ports(count: int) -> list[int]:
    """Ports free right now; all sockets stay open until the end so none is returned twice."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _cluster_env(token: str) -> dict[str, str]:
    """The environment of every ``ray`` command against the test cluster.

    No address is inherited from the session's Ray. Token authentication is set explicitly:
    left unset, ``ray start`` turns it on whenever ``~/.ray/auth_token`` exists (an in-process
    ``ray.init`` writes one) while the job client may stay off, and the submit is refused.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=token)
    return env


def _pids_naming(marker: str) -> list[int]:
    """Live processes whose command line has an argument containing ``marker`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:  # the process ended while we looked
            continue
        if state != "Z" and any(marker.encode() in arg for arg in args):
            found.append(int(entry.name))
    return found


def _end_processes(markers: list[str], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``grace_s``, the processes naming one of ``markers``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = {pid for marker in markers for pid in _pids_naming(marker)}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace_s
        while pids and time.monotonic() < deadline:
            time.sleep(0.2)
            pids = {pid for marker in markers for pid in _pids_naming(marker)}
        if not pids:
            return


@pytest.fixture(scope="module")
def local_cluster(object_store: ObjectStore) -> Iterator[LocalCluster]:
    """A 2-CPU head on ports of its own, started where the session's object store's ``AWS_*``
    variables are set (its jobs inherit them); its processes are ended afterwards."""
    # A short path: Ray puts Unix sockets under it and socket paths are limited to 107 bytes.
    temp_dir = Path(tempfile.mkdtemp(prefix="rrjob", dir="/tmp"))
    (gcs, dashboard, agent_http, agent_grpc, client, node_manager, object_manager, metrics,
     runtime_env_agent) = _free_ports(9)  # fmt: skip
    command = [
        str(RAY), "start", "--head", "--num-cpus", "2", "--temp-dir", str(temp_dir),
        "--port", str(gcs), "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard),
        "--dashboard-agent-listen-port", str(agent_http),
        "--dashboard-agent-grpc-port", str(agent_grpc), "--ray-client-server-port", str(client),
        "--node-manager-port", str(node_manager), "--object-manager-port", str(object_manager),
        "--metrics-export-port", str(metrics), "--runtime-env-agent-port", str(runtime_env_agent),
        "--disable-usage-stats",
    ]  # fmt: skip
    env = _cluster_env(secrets.token_hex(32))
    try:
        started = subprocess.run(command, env=env, capture_output=True, text=True, timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr
        yield LocalCluster(f"http://127.0.0.1:{dashboard}", temp_dir, env)
    finally:
        _end_processes([str(temp_dir)])
        shutil.rmtree(temp_dir, ignore_errors=True)


def submit(
    cluster: LocalCluster, submission_id: str, entrypoint: list[str], *options: str
) -> subprocess.CompletedProcess:
    """``ray job submit`` of ``entrypoint`` with the repository as its working dir."""
    command = [
        str(RAY), "job", "submit", "--address", cluster.dashboard_url,
        "--submission-id", submission_id, "--working-dir", str(REPO_ROOT),
        "--runtime-env-json", json.dumps({"excludes": UPLOAD_EXCLUDES}), *options,
        "--", *entrypoint,
    ]  # fmt: skip
    return subprocess.run(
        command, env=cluster.env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S
    )


def job_client(cluster: LocalCluster) -> Any:
    """The cluster's ``JobSubmissionClient``."""
    from ray.job_submission import JobSubmissionClient

    # The token explicitly: this process may hold a different one for the session's Ray.
    return JobSubmissionClient(
        cluster.dashboard_url, headers={"Authorization": f"Bearer {cluster.env['RAY_AUTH_TOKEN']}"}
    )


def job_log(submitted: subprocess.CompletedProcess) -> str:
    return submitted.stdout[-4000:] + submitted.stderr[-4000:]


@dataclass(frozen=True)
class JobRun:
    """A training run made by ``jobs/train.py`` in object storage, and what its submission
    printed."""

    out: str
    submission_id: str
    log: str


@pytest.fixture(scope="module")
def job_run(
    local_cluster: LocalCluster, tiny_catalogue: Path, object_store: ObjectStore,
    tmp_path_factory: pytest.TempPathFactory,
) -> JobRun:  # fmt: skip
    """A TF-IDF-only training run (the lightest run that seals a bundle) submitted as a job
    that reads its config and catalogue (a Parquet file carrying each row's image bytes)
    from object storage and publishes its run there."""
    from rakuten_ray.config import config_from_dict, load_config

    root, bucket = tmp_path_factory.mktemp("train_job"), object_store.bucket("training")
    data = load_config(REPO_ROOT / "configs/demo.yaml").to_dict()
    data["text_models"] = [m for m in data["text_models"] if m["kind"] == "tfidf_svm"]
    data["text_models"][0]["scaling"]["cpus_per_worker"] = 1
    data["image_models"] = []
    data["fusion"]["cv_folds"] = 3
    config_from_dict(data).save(root / "config.yaml")
    config = object_store.upload(root / "config.yaml", f"{bucket}/config.yaml")
    labelled_parquet_table(tiny_catalogue).to_parquet(root / "catalogue.parquet")
    catalogue = object_store.upload(root / "catalogue.parquet", f"{bucket}/catalogue.parquet")
    out = f"{bucket}/run"
    entrypoint = [sys.executable, "jobs/train.py", "--config", config,
                  "--data", catalogue, "--out", out]  # fmt: skip
    submission_id = f"train-{int(time.time())}"
    try:
        submitted = submit(local_cluster, submission_id, entrypoint)
    finally:
        _end_processes([out])
    assert submitted.returncode == 0, job_log(submitted)
    return JobRun(out, submission_id, job_log(submitted))


@pytest.mark.slow
def test_train_job_seals_a_verified_bundle(
    job_run: JobRun, local_cluster: LocalCluster, object_store: ObjectStore,
    tiny_catalogue: Path, tmp_path: Path,
) -> None:  # fmt: skip
    from ray.job_submission import JobStatus

    from rakuten_ray.bundle import load_bundle

    client = job_client(local_cluster)
    assert client.get_job_status(job_run.submission_id) == JobStatus.SUCCEEDED, job_run.log
    assert "bundle sealed in" in client.get_job_logs(job_run.submission_id)
    # Every file checked against its manifest, in this node's copy of the published bundle.
    bundle = load_bundle(f"{job_run.out}/bundle")
    assert [spec.name for spec in bundle.config.models()] == ["tfidf_svm"]
    run = object_store.download(job_run.out, tmp_path / "run")
    metrics = json.loads((run / "metrics.json").read_text())
    assert list(metrics["base_models"]) == ["tfidf_svm"]
    # Every row of the Parquet catalogue, in the protocol's three parts.
    parts = sum(metrics["rows"][part] for part in ("train", "val", "internal_test"))
    assert parts == len(pd.read_csv(tiny_catalogue / "X_train_update.csv"))


@pytest.mark.slow
def test_score_job_on_local_cluster(
    tiny_run: Path, tiny_catalogue: Path, object_store: ObjectStore,
    local_cluster: LocalCluster, tmp_path: Path,
) -> None:  # fmt: skip
    """The job scores every test row from object storage and publishes the submission there,
    in input order."""
    bucket = object_store.bucket("jobs")
    source = tiny_catalogue / "X_test_update.csv"
    bundle = object_store.upload(tiny_run / "bundle", f"{bucket}/bundle")
    remote_source = object_store.upload(source, f"{bucket}/input/X_test_update.csv")
    images = object_store.upload(tiny_catalogue / "images" / "image_test", f"{bucket}/images")
    out = f"{bucket}/scores"
    # The venv's Python rather than `python`, which the job's shell might resolve to another
    # interpreter.
    entrypoint = [
        sys.executable, "jobs/score.py", "--bundle", bundle, "--input", remote_source,
        "--images", images, "--out", out,
    ]  # fmt: skip
    submission_id = f"score-{int(time.time())}"
    try:
        submitted = submit(local_cluster, submission_id, entrypoint)
    finally:
        # Ends the job's driver too if it outlives the wait (its command line names `out`).
        _end_processes([out])
    log = job_log(submitted)
    assert submitted.returncode == 0, log

    from ray.job_submission import JobStatus

    assert job_client(local_cluster).get_job_status(submission_id) == JobStatus.SUCCEEDED, log

    assert "summary.json" in object_store.keys(out)
    scores = object_store.download(out, tmp_path / "scores")
    inputs = pd.read_csv(source, index_col=0)
    predictions = pd.read_parquet(scores / "predictions")
    assert len(predictions) == len(inputs)
    assert sorted(predictions["index"]) == sorted(inputs.index)

    with open(scores / "submission.csv") as handle:
        assert handle.readline().strip() == ",prdtypecode"
    submission = pd.read_csv(scores / "submission.csv", index_col=0)
    assert list(submission.columns) == ["prdtypecode"]
    assert submission.index.tolist() == inputs.index.tolist()
    expected = predictions.set_index("index")["prdtypecode"].loc[inputs.index].to_numpy()
    assert (submission["prdtypecode"].to_numpy() == expected).all()

    # The working dir the job ran in: the package and entrypoints, no virtualenv.
    unpacked = local_cluster.temp_dir / "session_latest" / "runtime_resources" / "working_dir_files"
    uploaded = [path for path in unpacked.glob("_ray_pkg_*") if path.is_dir()]
    assert uploaded, "no unpacked working dir found"
    for folder in uploaded:
        assert (folder / "jobs" / "score.py").is_file()
        assert (folder / "rakuten_ray" / "cli.py").is_file()
        assert not (folder / ".venv").exists()


def serve_until_ready(cluster: LocalCluster, submission_id: str, port: int) -> Any:
    """A client of the service the job deploys, once ``/readyz`` answers 200; fails with the
    job's logs if the job ends first or the service is not ready in time."""

    from rakuten_ray.serving.client import START_TIMEOUT_S, Client

    client, jobs = Client(f"http://127.0.0.1:{port}"), job_client(cluster)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if client.get("/readyz")[0] == 200:
                return client
        status = jobs.get_job_status(submission_id)
        if status.is_terminal():
            pytest.fail(f"serve job ended {status}: {jobs.get_job_logs(submission_id)[-4000:]}")
        time.sleep(1)
    pytest.fail(f"serve job not ready in {START_TIMEOUT_S} s: {jobs.get_job_logs(submission_id)}")


@pytest.mark.slow
def test_serve_job_answers_as_batch_scoring_until_stopped(
    job_run: JobRun, local_cluster: LocalCluster, tiny_catalogue: Path, tmp_path: Path
) -> None:
    """The job deploys the bundle the train job published to object storage; its answers are
    batch scoring's;
    ``ray job stop`` ends the job and the service with it."""
    from ray.job_submission import JobStatus

    from rakuten_ray.catalog import X_TEST_FILE
    from rakuten_ray.scoring.run import run_scoring
    from rakuten_ray.serving.client import free_port, product

    bundle, port = f"{job_run.out}/bundle", free_port()
    entrypoint = [sys.executable, "jobs/serve.py", "--bundle", bundle, "--port", str(port),
                  "--drain-seconds", "0", "--set", "serving.num_cpus=1"]  # fmt: skip
    submission_id = f"serve-{int(time.time())}"
    try:
        submitted = submit(local_cluster, submission_id, entrypoint, "--no-wait")
        assert submitted.returncode == 0, job_log(submitted)
        client = serve_until_ready(local_cluster, submission_id, port)
        rows = pd.read_csv(tiny_catalogue / X_TEST_FILE, index_col=0, keep_default_na=False)
        sent = [product(r.designation, r.description) for r in rows.head(8).itertuples()]
        status, reply = client.predict({"products": sent})
        assert status == 200, reply

        jobs = job_client(local_cluster)
        assert jobs.stop_job(submission_id)
        deadline = time.monotonic() + 60
        while not jobs.get_job_status(submission_id).is_terminal():
            assert time.monotonic() < deadline, jobs.get_job_logs(submission_id)[-4000:]
            time.sleep(0.5)
        assert jobs.get_job_status(submission_id) == JobStatus.STOPPED
        with pytest.raises(OSError):  # the service went with the job
            client.get("/healthz")
    finally:
        _end_processes([bundle])

    out = tmp_path / "batch"
    run_scoring(bundle, tiny_catalogue / X_TEST_FILE, tiny_catalogue / "images/image_test", out,
                engine="local")  # fmt: skip
    batch = read_predictions(out).head(8)
    assert [a["prdtypecode"] for a in reply["products"]] == batch["prdtypecode"].tolist()
    assert [a["decision"] for a in reply["products"]] == batch["decision"].tolist()
