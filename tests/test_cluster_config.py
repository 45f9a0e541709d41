"""``cluster.yaml`` is a valid Ray cluster launcher config with a CPU head and a GPU worker."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import ray.autoscaler
import yaml
from helpers import REPO_ROOT
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = REPO_ROOT / "cluster.yaml"


@pytest.fixture(scope="module")
def cluster_config() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_matches_ray_schema_as_written(cluster_config: dict[str, Any]) -> None:
    """The file itself, before Ray's defaults are merged in (catches misspelt keys)."""
    schema_path = Path(ray.autoscaler.__file__).parent / "ray-schema.json"
    jsonschema.validate(cluster_config, json.loads(schema_path.read_text()))


def test_passes_ray_up_validation(cluster_config: dict[str, Any]) -> None:
    """The same preparation and checks `ray up` applies (no cloud calls)."""
    validate_config(prepare_config(cluster_config))


def test_node_types(cluster_config: dict[str, Any]) -> None:
    node_types = cluster_config["available_node_types"]
    head = cluster_config["head_node_type"]
    assert head in node_types
    assert node_types[head]["resources"].get("GPU", 0) == 0

    gpu_workers = [
        spec for name, spec in node_types.items()
        if name != head and spec["resources"].get("GPU", 0) >= 1
    ]  # fmt: skip
    assert gpu_workers, "no GPU worker node type"
    for spec in gpu_workers:
        assert 0 <= spec["min_workers"] <= spec["max_workers"]
        assert spec["max_workers"] <= cluster_config["max_workers"]
    assert cluster_config["idle_timeout_minutes"] > 0


def test_installs_the_synced_repository(cluster_config: dict[str, Any]) -> None:
    mounts = cluster_config["file_mounts"]
    assert mounts.get("~/rakuten-ray") == "."
    assert "bash ~/rakuten-ray/cluster/setup_node.sh ~/rakuten-ray" in cluster_config[
        "setup_commands"
    ]
    script = (CLUSTER_YAML.parent / "cluster" / "setup_node.sh").read_text()
    assert 'pip" install -q -e "$repo"' in script
    assert ".venv" in cluster_config["rsync_exclude"]
    assert any("ray start --head" in c for c in cluster_config["head_start_ray_commands"])
    assert any("ray start --address" in c for c in cluster_config["worker_start_ray_commands"])


def test_node_setup_installs_dependencies_once_per_image(tmp_path: Path) -> None:
    """A node whose environment was stamped for this pyproject.toml installs nothing; one
    without the stamp would install (checked here without running pip: no venv is built)."""
    script = CLUSTER_YAML.parent / "cluster" / "setup_node.sh"
    venv, home = tmp_path / "venv", tmp_path / "home"
    (venv / "bin").mkdir(parents=True)
    home.mkdir()
    python = venv / "bin" / "python"
    python.symlink_to(sys.executable)
    digest = hashlib.sha256((CLUSTER_YAML.parent / "pyproject.toml").read_bytes()).hexdigest()
    (venv / ".rakuten-ray-deps").write_text(digest + "\n")
    env = {**os.environ, "HOME": str(home), "RAKUTEN_VENV": str(venv)}
    done = subprocess.run(
        ["bash", str(script), str(CLUSTER_YAML.parent)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "already installed" in done.stdout
    assert f"source {venv}/bin/activate" in (home / ".bashrc").read_text()
