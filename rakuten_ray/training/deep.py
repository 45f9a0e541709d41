"""Driving Ray Train for one deep base model and collecting what fusion needs."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rakuten_ray.catalog import LABEL_COLUMN
from rakuten_ray.models.kind import DeepKind
from rakuten_ray.models.spec import DeepModelSpec, Scaling
from rakuten_ray.splits import stratified_splits
from rakuten_ray.training.fitted import FitResult
from rakuten_ray.training.loop import HISTORY_FILE, MONITOR, TRAIN_STATE_FILE, train_loop_per_worker

#: Checkpoints kept per run: the best by validation log loss, and the latest to resume from.
CHECKPOINTS_KEPT = 2
#: Share of all rows held back to early-stop a deep model retrained on everything.
TECHNICAL_VAL_FRACTION = 0.05
#: Ray Train's setting for how long its controller waits for the workers' placement group
#: before it logs an error and asks again, and the seconds given to it here unless set: a
#: run waits as long in any case (the controller retries without limit), so one waiting for
#: another model's CPUs, or for a node an autoscaler adds, waits without an error a minute.
WORKER_GROUP_WAIT_ENV, WORKER_GROUP_WAIT_S = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", 86_400


def scaling_config(scaling: Scaling) -> Any:
    """Ray Train's ``ScalingConfig`` for a model's scaling section."""
    from ray.train import ScalingConfig

    resources: dict[str, float] = {"CPU": scaling.cpus_per_worker}
    if scaling.use_gpu:
        resources["GPU"] = max(scaling.gpus_per_worker, 1.0)
    return ScalingConfig(
        num_workers=scaling.num_workers,
        use_gpu=scaling.use_gpu,
        resources_per_worker=resources,
    )


def build_trainer(
    spec: DeepModelSpec, train_table: Path, val_table: Path, storage: Path, seed: int
) -> Any:
    """A ``TorchTrainer`` for ``spec``; re-creating it with the same storage resumes the run."""
    from ray.train import CheckpointConfig, FailureConfig, RunConfig
    from ray.train.torch import TorchTrainer

    # Read from the driver's environment when the trainer is made, then passed on to the
    # run's controller wherever it runs.
    os.environ.setdefault(WORKER_GROUP_WAIT_ENV, str(WORKER_GROUP_WAIT_S))
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "spec": spec,
            "train_table": str(train_table.resolve()),
            "val_table": str(val_table.resolve()),
            "seed": seed,
        },
        scaling_config=scaling_config(spec.scaling),
        run_config=RunConfig(
            name=spec.name,
            storage_path=str(storage.resolve()),
            failure_config=FailureConfig(max_failures=spec.scaling.max_failures),
            checkpoint_config=CheckpointConfig(
                num_to_keep=CHECKPOINTS_KEPT,
                checkpoint_score_attribute=MONITOR,
                checkpoint_score_order="min",
            ),
        ),
    )


def fit_deep_model(
    spec: DeepModelSpec, train: pd.DataFrame, val: pd.DataFrame, work_dir: Path, seed: int
) -> FitResult:
    """Fine-tune ``spec`` with Ray Train and copy its best checkpoint to ``work_dir/model``.

    Args:
        spec: a model of a Ray Train kind.
        train: its training table (``label`` and the task's input column).
        val: validation table, same columns (early stopping and checkpoint choice).
        work_dir: this model's folder inside the run.
        seed: torch seed of every worker.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    tables = {}
    for name, table in (("train", train), ("val", val)):
        tables[name] = work_dir / f"{name}_rows.parquet"
        table.to_parquet(tables[name])
    trainer = build_trainer(spec, tables["train"], tables["val"], work_dir / "ray_train", seed)
    result = trainer.fit()
    best = result.get_best_checkpoint(MONITOR, "min")
    model_dir = work_dir / "model"
    if model_dir.exists():
        shutil.rmtree(model_dir)
    with best.as_directory() as folder:
        shutil.copytree(folder, model_dir, ignore=shutil.ignore_patterns(TRAIN_STATE_FILE))
    with result.checkpoint.as_directory() as latest:
        history = json.loads((Path(latest) / HISTORY_FILE).read_text())
    best_epoch = min(history, key=lambda h: h[MONITOR])["epoch"]
    (model_dir / HISTORY_FILE).unlink()
    for name in tables:
        tables[name].unlink()
    return FitResult(model_dir=model_dir, history=history, best_epoch=int(best_epoch))


def fit_with_ray_train(
    kind: DeepKind,
    spec: DeepModelSpec,
    train: pd.DataFrame,
    val: pd.DataFrame | None,
    work_dir: Path,
    seed: int,
) -> FitResult:
    """Fine-tune on the kind's tables of ``train`` and ``val`` catalogue rows. Without
    ``val`` (a retrain on every row), a small stratified technical split of ``train`` is held
    back for early stopping."""
    if val is None:
        technical = stratified_splits(
            train[LABEL_COLUMN], seed=seed, test_fraction=TECHNICAL_VAL_FRACTION, val_fraction=0.5
        )
        train, val = (
            train.loc[np.concatenate([technical.train, technical.val])],
            train.loc[technical.test],
        )
    return fit_deep_model(spec, kind.table(spec, train), kind.table(spec, val), work_dir, seed)
