"""``benchmarks/gpu_check.py``: refuses where no CUDA device is visible, and runs whole where
Ray (and skops) cannot be imported, as on a bare GPU machine; here on the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.py"


def run_check(args: list[str], pythonpath: list[Path]) -> subprocess.CompletedProcess[str]:
    """The script in a fresh Python with no CUDA device visible."""
    env = {
        **os.environ,
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONPATH": os.pathsep.join(str(p) for p in [*pythonpath, REPO_ROOT]),
    }
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=600,
    )  # fmt: skip


def test_refuses_where_no_cuda_device_is_visible() -> None:
    done = run_check([], [])
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().splitlines() == [
        "gpu_check: no CUDA device is visible (torch.cuda.is_available() is False); "
        "run it on a machine with an NVIDIA GPU"
    ]
    assert done.stdout == ""


@pytest.mark.slow
def test_the_whole_check_runs_without_ray(tmp_path: Path) -> None:
    absent = tmp_path / "absent"
    for name in ("ray", "skops"):  # neither is installed on the GPU machine
        (absent / name).mkdir(parents=True)
        (absent / name / "__init__.py").write_text(f"raise ImportError('no {name} here')\n")
    out = tmp_path / "report.json"
    args = ["--device", "cpu", "--rows", "64", "--epochs", "1", "--out", str(out)]
    done = run_check(args, [absent])
    assert done.returncode == 0, done.stderr
    assert "agreement" in done.stdout
    report = json.loads(out.read_text())
    assert set(report["models"]) == {"camembert_large", "convnext_base"}
    for name, model in report["models"].items():
        assert model["precision"] == "bf16"
        assert model["training"]["autocast"] == "none (fp32)", name  # a CPU never autocasts
        assert len(model["training"]["epochs"]) == 1
        scoring = model["scoring"]
        assert scoring["rows"] > 0
        # bf16 autocast against fp32, both on the CPU: two paths that must agree while bf16's
        # rounding moves the probabilities (a path that ignored the precision would match
        # fp32 exactly; a broken one would move them far). The tiny models, one epoch in,
        # are close to uniform, so a difference of 1e-5 (measured) can swap near-tied top
        # classes: one row in 64 of ConvNeXt's did.
        assert (scoring["checked"], scoring["reference"]) == ("bf16 on cpu", "fp32 on cpu")
        assert scoring["label_agreement"] >= 0.95, name
        assert 0.0 < scoring["max_abs_prob_diff"] < 1e-3, name
