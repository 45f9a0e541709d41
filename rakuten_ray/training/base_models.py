"""Training each base model on the ``train`` rows and scoring the held-out rows.

The TF-IDF model is fitted inside a Ray task and the deep models with Ray Train, so every
step runs on the cluster. Held-out scores are computed in Ray tasks with the same classifier
classes that scoring uses, so fusion is fitted on exactly what scoring will produce.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import ray

from rakuten_ray.catalog import LABEL_COLUMN, codes_to_indices
from rakuten_ray.config import ModelSpec
from rakuten_ray.images import ImageStatus, load_image
from rakuten_ray.training.data import image_table, text_table
from rakuten_ray.training.deep import fit_deep_model


@dataclass
class BaseModelRun:
    """A trained base model and its scores (logits) on held-out rows, keyed by row index."""

    spec: ModelSpec
    model_dir: Path
    heldout_scores: pd.DataFrame
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None


def _task_resources(spec: ModelSpec) -> dict[str, float]:
    gpus = 1.0 if spec.scaling.use_gpu else 0.0
    return {"num_cpus": spec.scaling.cpus_per_worker, "num_gpus": gpus}


@ray.remote
def _fit_tfidf(
    designations: list[str], descriptions: list[str], y_idx: np.ndarray, spec: ModelSpec, seed: int
) -> Any:
    from rakuten_ray.models.tfidf_svm import fit_tfidf_svm

    return fit_tfidf_svm(
        designations, descriptions, y_idx, C=spec.C, calibration_folds=spec.calibration_folds,
        seed=seed,
    )  # fmt: skip


@ray.remote
def _score_text(kind: str, folder: str, rows: pd.DataFrame) -> np.ndarray:
    from rakuten_ray.models.registry import load_text_scorer

    scorer = load_text_scorer(kind, Path(folder))
    return scorer.scores(rows["designation"].tolist(), rows["description"].tolist())


@ray.remote
def _score_images(folder: str, paths: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Logits of the usable images, and the mask of which paths were usable."""
    from rakuten_ray.models.vision import load_image_model

    classifier = load_image_model(Path(folder))
    loaded = [load_image(p) for p in paths]
    usable = np.array([item.status == ImageStatus.OK for item in loaded], dtype=bool)
    logits = classifier.logits([item.image for item in loaded if item.status == ImageStatus.OK])
    return logits, usable


def fit_tfidf_model(spec: ModelSpec, rows: pd.DataFrame, folder: Path, seed: int) -> Path:
    """Fit the TF-IDF recipe on ``rows`` in a Ray task; save it to ``folder``."""
    from rakuten_ray.models.tfidf_svm import save_tfidf_svm

    pipeline = ray.get(
        _fit_tfidf.options(**_task_resources(spec)).remote(
            rows["designation"].tolist(),
            rows["description"].tolist(),
            codes_to_indices(rows[LABEL_COLUMN]),
            spec,
            seed,
        )
    )
    save_tfidf_svm(pipeline, folder)
    return folder


def heldout_scores(spec: ModelSpec, model_dir: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """Scores of ``rows`` by a trained model; image models score only rows with a usable image."""
    options = _task_resources(spec)
    if spec.kind == "timm_image":
        logits, usable = ray.get(
            _score_images.options(**options).remote(str(model_dir), rows["image_path"].tolist())
        )
        return pd.DataFrame(logits, index=rows.index[usable])
    scores = ray.get(_score_text.options(**options).remote(spec.kind, str(model_dir), rows))
    return pd.DataFrame(scores, index=rows.index)


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
    if spec.kind == "tfidf_svm":
        model_dir = fit_tfidf_model(spec, train, work_dir / "model", seed)
        history: list[dict[str, Any]] = []
        best_epoch = None
    else:
        if spec.kind == "timm_image":
            train_rows, val_rows = image_table(train), image_table(val)
        else:
            train_rows, val_rows = text_table(train, spec.template), text_table(val, spec.template)
        fit = fit_deep_model(spec, train_rows, val_rows, work_dir, seed)
        model_dir, history, best_epoch = fit.model_dir, fit.history, fit.best_epoch
    scores = heldout_scores(spec, model_dir, heldout)
    return BaseModelRun(
        spec=spec,
        model_dir=model_dir,
        heldout_scores=scores,
        seconds=time.perf_counter() - started,
        history=history,
        best_epoch=best_epoch,
    )
