"""How each base model trains: its kind's ``trainer`` names one of :data:`TRAINERS`, and
training, not the kind, decides how that trainer runs and how a model is refit for the bundle.

A trainer takes the kind, its settings, training rows, validation rows (``None``: the
trainer holds back what it needs itself), the model's working folder and a seed, and
gives a :class:`FitResult` whose folder is ``work_dir/model``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import ray

from rakuten_ray.models.kind import ModelKind, TaskKind, TrainerName
from rakuten_ray.models.registry import kind_of
from rakuten_ray.models.spec import DeepModelSpec, ModelSpec
from rakuten_ray.training.deep import fit_with_ray_train
from rakuten_ray.training.fitted import FitResult

#: A trainer's signature; each takes the kinds of its own base class, hence ``Any`` first.
Trainer = Callable[[Any, Any, pd.DataFrame, pd.DataFrame | None, Path, int], FitResult]


@ray.remote
def _fit_rows(kind: TaskKind, spec: ModelSpec, rows: pd.DataFrame, seed: int) -> Any:
    """The kind's pure fit, run where the task's CPUs are."""
    return kind.fit_rows(spec, rows, seed)


def fit_in_task(
    kind: TaskKind,
    spec: ModelSpec,
    train: pd.DataFrame,
    val: pd.DataFrame | None,
    work_dir: Path,
    seed: int,
) -> FitResult:
    """Fit on ``train`` in one Ray task with the model's CPUs; the driver saves the fitted
    model to ``work_dir/model`` (``val`` is not read: such a kind does not stop early)."""
    task = _fit_rows.options(num_cpus=spec.scaling.cpus_per_worker)
    model = ray.get(task.remote(kind, spec, train, seed))
    folder = work_dir / "model"
    kind.save(model, folder)
    return FitResult(folder)


#: The function that trains the kinds of each trainer name.
TRAINERS: dict[TrainerName, Trainer] = {
    "ray_task": fit_in_task,
    "ray_train": fit_with_ray_train,
}


def trainer_of(kind: ModelKind) -> Trainer:
    """The function that trains ``kind``."""
    return TRAINERS[kind.trainer]


def fit_model(
    spec: ModelSpec, train: pd.DataFrame, val: pd.DataFrame, work_dir: Path, seed: int
) -> FitResult:
    """Train ``spec`` on ``train`` (``val`` for early stopping) into ``work_dir/model``."""
    kind = kind_of(spec)
    return trainer_of(kind)(kind, spec, train, val, work_dir, seed)


def refit_model(
    spec: ModelSpec, fitted: FitResult, rows: pd.DataFrame, work_dir: Path, seed: int
) -> Path:
    """The folder that goes into the bundle, once fusion is fitted: ``fitted``'s for a deep
    model with ``refit: keep``, else a model trained again on ``rows`` (every labelled row
    of its modality) into ``work_dir/refit``."""
    if isinstance(spec, DeepModelSpec) and spec.refit == "keep":
        return fitted.model_dir
    kind = kind_of(spec)
    return trainer_of(kind)(kind, spec, rows, None, work_dir / "refit", seed).model_dir
