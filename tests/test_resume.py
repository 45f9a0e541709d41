"""``rakuten-ray train --resume``: a run whose driver is killed continues in its own folder.

The driver of a training run (its own process, its own local Ray) is SIGKILLed after the first
deep model's first checkpoint; resuming reuses every base model it had finished, continues
the interrupted Ray Train run from its checkpoint, and seals a bundle whose figures equal an
uninterrupted run's. A resume with another config or other data is refused before any work.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from fault_injection import checkpoint_registered
from helpers import production_shaped_config

from rakuten_ray.catalog import CLASS_CODES, LABEL_COLUMN, Y_TRAIN_FILE
from rakuten_ray.cli import main
from rakuten_ray.layout import RunLayout
from rakuten_ray.training.report import TrainingReport

pytestmark = pytest.mark.slow

#: The deep model whose Ray Train run is interrupted, and its epochs: enough that the run is
#: still going when its first checkpoint is seen.
INTERRUPTED, EPOCHS = "camembert_large", 4
KEPT_MODELS = ("tfidf_svm", INTERRUPTED)
#: The determinism doc's bound for a Ray Train run repeated with the same seed.
LOGIT_TOLERANCE = 1e-6
KILL_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def small_config(tmp_path_factory: pytest.TempPathFactory, tiny_production_models) -> Path:
    """The production-shaped config's TF-IDF model and CamemBERT (one worker): a finished
    model and an interrupted one."""
    config = production_shaped_config(tiny_production_models).to_dict()
    for modality in ("text_models", "image_models"):
        config[modality] = [m for m in config[modality] if m["name"] in KEPT_MODELS]
        for model in config[modality]:
            model["scaling"]["num_workers"] = 1
    deep = next(m for m in config["text_models"] if m["name"] == INTERRUPTED)
    deep["train"].update(epochs=EPOCHS, patience=EPOCHS)
    config["export"]["onnx"] = False  # the seal's exports have tests of their own
    path = tmp_path_factory.mktemp("resume_config") / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train_args(config: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--config", str(config), "--data", str(data), "--out", str(out), *extra]


def kill_driver_after_first_checkpoint(argv: list[str], out: Path) -> dict[str, bool]:
    """Start ``rakuten-ray train`` in its own process (and so its own local Ray) and SIGKILL
    it once the interrupted model's Ray Train run has a checkpoint; returns which base models
    had finished by then."""
    storage = RunLayout(out).model_dir(INTERRUPTED) / "ray_train" / INTERRUPTED
    driver = subprocess.Popen(
        [sys.executable, "-m", "rakuten_ray.cli", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + KILL_TIMEOUT_S
        while not checkpoint_registered(storage):
            assert driver.poll() is None, f"the run ended ({driver.returncode}) before a checkpoint"
            assert time.monotonic() < deadline, "no checkpoint within the time limit"
            time.sleep(0.05)
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(timeout=60)
    finally:
        # The driver's local Ray shares its fate; anything left of its session goes too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    return {name: RunLayout(out).finished(name).is_file() for name in KEPT_MODELS}


def changed_labels_copy(data: Path, dest: Path) -> Path:
    """The catalogue with one label changed (its images linked, not copied)."""
    shutil.copytree(data, dest, ignore=shutil.ignore_patterns("images"))
    (dest / "images").symlink_to((data / "images").resolve())
    labels_file = dest / Y_TRAIN_FILE
    labels = pd.read_csv(labels_file, index_col=0)
    first = labels.index[0]
    labels.loc[first, LABEL_COLUMN] = next(
        c for c in CLASS_CODES if c != labels.loc[first, LABEL_COLUMN]
    )
    labels.to_csv(labels_file)
    return dest


def test_a_killed_training_driver_resumes_to_the_uninterrupted_result(
    ray_local, tiny_catalogue: Path, small_config: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:  # fmt: skip
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert main(train_args(small_config, tiny_catalogue, reference)) == 0

    finished_at_kill = kill_driver_after_first_checkpoint(
        train_args(small_config, tiny_catalogue, run), run
    )
    assert not finished_at_kill[INTERRUPTED], "the run was killed too late to test a resume"
    assert not RunLayout(run).bundle.root.exists()
    records = {
        name: RunLayout(run).finished(name).read_bytes()
        for name, done in finished_at_kill.items()
        if done
    }
    capsys.readouterr()

    # Another config or other data: refused before any work, naming what differs.
    assert main(train_args(small_config, tiny_catalogue, run, "--resume", "--set", "seed=7")) == 2
    assert "seed: was 42, now 7" in capsys.readouterr().err
    other_data = changed_labels_copy(tiny_catalogue, tmp_path / "other_data")
    assert main(train_args(small_config, other_data, run, "--resume")) == 2
    assert "--data: was " in capsys.readouterr().err
    assert main(train_args(small_config, tiny_catalogue, run, "--resume", "--overwrite")) == 2
    capsys.readouterr()

    assert main(train_args(small_config, tiny_catalogue, run, "--resume")) == 0
    printed = capsys.readouterr().out
    for name, record in records.items():  # each finished model trained once
        assert f"base model {name} reused from the interrupted run" in printed
        assert RunLayout(run).finished(name).read_bytes() == record
    assert f"base model {INTERRUPTED} (hf_text, ray_train) trained" in printed

    resumed, expected = (TrainingReport.load(RunLayout(r).metrics) for r in (run, reference))
    history = resumed.base_models[INTERRUPTED].epochs
    assert [h["epoch"] for h in history] == list(range(EPOCHS))
    starts = [h["attempt_start_epoch"] for h in history]
    assert starts[0] == 0 and starts[-1] > 0, starts  # continued from its checkpoint
    for name in KEPT_MODELS:
        ours = pd.read_parquet(RunLayout(run).heldout_scores(name))
        theirs = pd.read_parquet(RunLayout(reference).heldout_scores(name))
        pd.testing.assert_frame_equal(ours, theirs, check_exact=False, atol=LOGIT_TOLERANCE)
    for part in ("final", "final_internal_test", "text_only", "text_blend"):
        got, want = getattr(resumed.stack, part), getattr(expected.stack, part)
        assert got.weighted_f1 == pytest.approx(want.weighted_f1, abs=1e-9), part
        assert got.log_loss == pytest.approx(want.log_loss, abs=1e-5), part
    sealed = json.loads((RunLayout(run).bundle.root / "manifest.json").read_text())
    assert sealed["metrics"]["stack"]["final"] == resumed.to_dict()["stack"]["final"]


def test_resume_needs_a_run_to_continue(small_config: Path, tiny_catalogue: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture) -> None:  # fmt: skip
    assert main(train_args(small_config, tiny_catalogue, tmp_path / "none", "--resume")) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_a_new_run_refuses_an_old_runs_folder(small_config: Path, tiny_catalogue: Path,
                                              tmp_path: Path) -> None:  # fmt: skip
    """Ray Train finds checkpoints by folder: a new run there would continue the old one's."""
    from rakuten_ray.catalog import SchemaError
    from rakuten_ray.config import load_config
    from rakuten_ray.training.protocol import run_training

    old = tmp_path / "run" / "base_models" / "m" / "ray_train" / "m" / "checkpoint_1"
    old.mkdir(parents=True)
    with pytest.raises(SchemaError, match="a new run needs an empty folder"):
        run_training(load_config(small_config), tiny_catalogue, tmp_path / "run")
    assert [p.name for p in (tmp_path / "run").iterdir()] == ["base_models"]
