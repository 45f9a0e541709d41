"""``tfidf_svm``: the original TF-IDF + LinearSVC recipe (:mod:`rakuten_ray.models.tfidf_svm`),
a ``ray_task`` kind: training runs its fit in one Ray task, and again on every labelled row
for the bundle."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from rakuten_ray.catalog import LABEL_COLUMN, codes_to_indices
from rakuten_ray.models.kind import Modality, TaskKind
from rakuten_ray.models.settings import Real
from rakuten_ray.models.spec import DEFAULT_PRECISION, ModelSpec, Precision

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

    from rakuten_ray.models.tfidf_svm import TfidfSvmClassifier


class TfidfSvmSpec(ModelSpec):
    """Settings of the TF-IDF + LinearSVC model (``scaling.cpus_per_worker``: its task's CPUs)."""

    C: Real = 0.2
    calibration_folds: int = 3


class TfidfSvmKind(TaskKind):
    name = "tfidf_svm"
    modality = Modality.TEXT
    spec_type = TfidfSvmSpec

    def fit_rows(self, spec: TfidfSvmSpec, rows: pd.DataFrame, seed: int) -> Pipeline:
        # Sigmoid calibration folds inside the fit take the place of a validation split.
        from rakuten_ray.models.tfidf_svm import fit_tfidf_svm

        return fit_tfidf_svm(
            rows["designation"].tolist(),
            rows["description"].tolist(),
            codes_to_indices(rows[LABEL_COLUMN]),
            C=spec.C,
            calibration_folds=spec.calibration_folds,
            seed=seed,
        )

    def save(self, model: Pipeline, folder: Path) -> None:
        from rakuten_ray.models.tfidf_svm import save_tfidf_svm

        save_tfidf_svm(model, folder)

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
