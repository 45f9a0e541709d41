"""Training one base model on the ``train`` rows and scoring the held-out rows.

Each model trains the way its kind says (a Ray task, or Ray Train). Held-out rows are then
scored in a Ray task by the scorer that the scoring stages load, so fusion is fitted on
exactly what scoring will produce.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import ray

from rakuten_ray.models.registry import FitResult, get_kind, kind_of
from rakuten_ray.models.spec import ModelSpec


@dataclass
class BaseModelRun:
    """A trained base model and its scores (logits) on held-out rows, keyed by row index."""

    spec: ModelSpec
    fit: FitResult
    heldout_scores: pd.DataFrame
    seconds: float

    @property
    def model_dir(self) -> Path:
        return self.fit.model_dir


@ray.remote
def _score_rows(kind: str, folder: str, rows: pd.DataFrame) -> pd.DataFrame:
    return get_kind(kind).load_scorer(Path(folder)).score_rows(rows)


def heldout_scores(spec: ModelSpec, model_dir: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """Logits of ``rows`` by a trained model, in a Ray task with the model's resources
    (image models score only rows with a usable image)."""
    scaling = spec.scaling
    task = _score_rows.options(
        num_cpus=scaling.cpus_per_worker, num_gpus=1.0 if scaling.use_gpu else 0.0
    )
    return ray.get(task.remote(spec.kind, str(model_dir), rows))


def train_base_model(
    spec: ModelSpec,
    train: pd.DataFrame,
    val: pd.DataFrame,
    heldout: pd.DataFrame,
    work_dir: Path,
    seed: int,
) -> BaseModelRun:
    """Train ``spec`` on ``train`` (``val`` for early stopping) and score ``heldout``.

    Args:
        spec: the base model.
        train: training rows (catalogue columns, ``prdtypecode``, ``image_path``).
        val: validation rows for deep models' early stopping and checkpoint choice.
        heldout: rows no base model trains on, scored for fusion.
        work_dir: this model's folder in the run.
        seed: random seed.
    """
    started = time.perf_counter()
    fit = kind_of(spec).fit(spec, train, val, work_dir, seed)
    scores = heldout_scores(spec, fit.model_dir, heldout)
    return BaseModelRun(spec, fit, scores, seconds=time.perf_counter() - started)
