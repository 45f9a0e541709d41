"""``tfidf_svm``: the original TF-IDF + LinearSVC recipe (:mod:`rakuten_ray.models.tfidf_svm`),
fitted inside a Ray task and refit on every labelled row for the bundle."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from rakuten_ray.models.registry import FitResult, Modality, ModelKind, register
from rakuten_ray.models.settings import Real
from rakuten_ray.models.spec import DEFAULT_PRECISION, ModelSpec, Precision

if TYPE_CHECKING:
    from rakuten_ray.models.tfidf_svm import TfidfSvmClassifier


class TfidfSvmSpec(ModelSpec):
    """Settings of the TF-IDF + LinearSVC model (``scaling.cpus_per_worker``: its task's CPUs)."""

    C: Real = 0.2
    calibration_folds: int = 3


def _fit_in_task(spec: TfidfSvmSpec, rows: pd.DataFrame, folder: Path, seed: int) -> Path:
    """Fit the recipe on ``rows`` in a Ray task; save it to ``folder``."""
    import ray

    from rakuten_ray.catalog import LABEL_COLUMN, codes_to_indices
    from rakuten_ray.models.tfidf_svm import fit_tfidf_svm, save_tfidf_svm

    task = ray.remote(fit_tfidf_svm).options(num_cpus=spec.scaling.cpus_per_worker)
    pipeline = ray.get(
        task.remote(
            rows["designation"].tolist(),
            rows["description"].tolist(),
            codes_to_indices(rows[LABEL_COLUMN]),
            C=spec.C,
            calibration_folds=spec.calibration_folds,
            seed=seed,
        )
    )
    save_tfidf_svm(pipeline, folder)
    return folder


@register
class TfidfSvmKind(ModelKind):
    name = "tfidf_svm"
    modality = Modality.TEXT
    spec_type = TfidfSvmSpec
    trainer = "ray_task"

    def fit(
        self, spec: Any, train: pd.DataFrame, val: pd.DataFrame, work_dir: Path, seed: int
    ) -> FitResult:
        # Sigmoid calibration folds inside the fit take the place of a validation split.
        return FitResult(_fit_in_task(spec, train, work_dir / "model", seed))

    def refit(
        self, spec: Any, fitted: FitResult, rows: pd.DataFrame, work_dir: Path, seed: int
    ) -> Path:
        return _fit_in_task(spec, rows, work_dir / "refit", seed)

    def load_scorer(
        self,
        folder: Path,
        batch_size: int | None = None,
        precision: Precision = DEFAULT_PRECISION,
        device: str | None = None,
    ) -> TfidfSvmClassifier:
        # scikit-learn on the CPU: no device or precision to choose.
        from rakuten_ray.models.tfidf_svm import TfidfSvmClassifier

        return TfidfSvmClassifier(folder)
