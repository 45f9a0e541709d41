"""TF-IDF + LinearSVC, the original recipe, with calibrated probabilities.

Word 1-2 grams and character 3-5 grams, each on the title and on the description, feed a
LinearSVC (C=0.2) wrapped in sigmoid calibration (3 folds). The fitted pipeline is made of
scikit-learn types only, so it persists with skops and loads without unpickling anything.

Scoring reads the fitted pipeline's arrays once (:class:`CalibratedSvmArrays`) and computes
its probabilities in a few array operations, bit for bit what ``predict_proba`` gives: the
pipeline's own call validates its input once per class and fold (81 times on 27 classes),
which cost more than the model on one product.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.special import expit
from sklearn.calibration import CalibratedClassifierCV
from sklearn.compose import ColumnTransformer
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.svm import LinearSVC

from rakuten_ray.catalog import NUM_CLASSES
from rakuten_ray.models.scorers import TextScorer
from rakuten_ray.safe_io import CALIBRATED_CLASSIFIER_TYPES, load_sklearn, save_sklearn
from rakuten_ray.text import clean_text

MODEL_FILE = "tfidf_svm.skops"
#: Smallest probability kept when taking logs, so a class the model rules out stays finite.
PROBABILITY_FLOOR = 1e-7


def _vectorizer(analyzer: str, ngrams: tuple[int, int]) -> TfidfVectorizer:
    # Sublinear tf and float32 keep the char n-gram matrices smaller and better scaled.
    return TfidfVectorizer(
        analyzer=analyzer, ngram_range=ngrams, sublinear_tf=True, min_df=2, dtype=np.float32
    )


def build_tfidf_svm(C: float = 0.2, calibration_folds: int = 3, seed: int = 42) -> Pipeline:
    """The unfitted pipeline; input is a frame with cleaned ``title`` and ``desc`` columns."""
    features = ColumnTransformer(
        [
            ("title_word", _vectorizer("word", (1, 2)), "title"),
            ("title_char", _vectorizer("char_wb", (3, 5)), "title"),
            ("desc_word", _vectorizer("word", (1, 2)), "desc"),
            ("desc_char", _vectorizer("char_wb", (3, 5)), "desc"),
        ]
    )
    svm = LinearSVC(C=C, random_state=seed)
    classifier = CalibratedClassifierCV(svm, method="sigmoid", cv=calibration_folds)
    return Pipeline([("features", features), ("classifier", classifier)])


def text_columns(designations: Sequence[object], descriptions: Sequence[object]) -> pd.DataFrame:
    """The two cleaned text columns the pipeline reads."""
    return pd.DataFrame(
        {
            "title": [clean_text(v) for v in designations],
            "desc": [clean_text(v) for v in descriptions],
        }
    )


def all_classes(probs: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """``probs`` over a fitted model's ``classes`` (class indices) as columns of all 27, so
    classes absent when it was fitted get probability 0."""
    if probs.shape[1] == NUM_CLASSES:
        return probs
    out = np.zeros((len(probs), NUM_CLASSES))
    out[:, classes.astype(int)] = probs
    return out


def fit_tfidf_svm(
    designations: Sequence[object],
    descriptions: Sequence[object],
    y_idx: np.ndarray,
    C: float = 0.2,
    calibration_folds: int = 3,
    seed: int = 42,
) -> Pipeline:
    """Fit the recipe on raw text and class indices (0..26)."""
    counts = np.bincount(y_idx)
    folds = int(min(calibration_folds, counts[counts > 0].min()))
    pipeline = build_tfidf_svm(C=C, calibration_folds=max(folds, 2), seed=seed)
    return pipeline.fit(text_columns(designations, descriptions), y_idx)


def save_tfidf_svm(pipeline: Pipeline, folder: Path) -> None:
    """Persist with skops into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    save_sklearn(pipeline, folder / MODEL_FILE)


class CalibratedSvmArrays:
    """A fitted pipeline's vectorizers and its calibrated folds' weights as arrays.

    ``probabilities`` equals ``pipeline.predict_proba`` bit for bit: the same sparse product
    per output column (one product for all folds, whose columns sum their terms in the same
    order), the same sigmoid, normalisation, clipping and fold mean.

    Raises:
        ValueError: the pipeline is not the recipe's (sigmoid calibration of a linear model,
            more than two classes).
    """

    def __init__(self, pipeline: Pipeline) -> None:
        features, calibrated = pipeline.named_steps["features"], pipeline.named_steps["classifier"]
        self.vectorizers_ = [
            (vectorizer, column)
            for _, vectorizer, column in features.transformers_
            if isinstance(vectorizer, TfidfVectorizer)
        ]
        self.n_classes_ = len(calibrated.classes_)
        folds = calibrated.calibrated_classifiers_
        if calibrated.method != "sigmoid" or self.n_classes_ <= 2:
            raise ValueError("expected sigmoid calibration over more than two classes")
        self.n_folds_ = len(folds)
        # Per fold: its classes' positions among all classes, and one column per class.
        classes = calibrated.classes_
        self.positions_ = [np.searchsorted(classes, f.estimator.classes_) for f in folds]
        self.weights_ = np.concatenate([f.estimator.coef_ for f in folds]).T
        self.intercepts_ = np.concatenate([f.estimator.intercept_ for f in folds])
        self.slopes_ = np.concatenate([[c.a_ for c in f.calibrators] for f in folds])
        self.offsets_ = np.concatenate([[c.b_ for c in f.calibrators] for f in folds])

    def probabilities(self, columns: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities of the pipeline's classes, shape ``(n, n_classes_)``."""
        blocks = [vectorizer.transform(columns[column]) for vectorizer, column in self.vectorizers_]
        decisions = sparse.hstack(blocks).tocsr() @ self.weights_ + self.intercepts_
        sigmoids = expit(-(self.slopes_ * decisions + self.offsets_))
        mean = np.zeros((len(columns), self.n_classes_))
        start = 0
        for positions in self.positions_:
            proba = np.zeros_like(mean)
            proba[:, positions] = sigmoids[:, start : start + len(positions)]
            start += len(positions)
            total = np.sum(proba, axis=1)[:, np.newaxis]
            # All-zero sigmoids (far outside every class) give the uniform distribution.
            proba = np.divide(
                proba, total, out=np.full_like(proba, 1 / self.n_classes_), where=total != 0
            )
            proba[(proba > 1.0) & (proba <= 1.0 + 1e-5)] = 1.0
            mean += proba
        mean /= self.n_folds_
        return mean


class TfidfSvmClassifier(TextScorer):
    """A fitted TF-IDF + LinearSVC pipeline ready to score batches of products."""

    def __init__(self, folder: str | Path) -> None:
        self.pipeline: Pipeline = load_sklearn(
            Path(folder) / MODEL_FILE, CALIBRATED_CLASSIFIER_TYPES
        )
        self.arrays = CalibratedSvmArrays(self.pipeline)

    def scores(self, designations: Sequence[object], descriptions: Sequence[object]) -> np.ndarray:
        """Log of the calibrated probabilities, shape ``(n, 27)``.

        Logs, so that every base model hands fusion scores whose softmax is its probability.
        """
        if len(designations) == 0:
            return np.empty((0, NUM_CLASSES), dtype=np.float32)
        probs = all_classes(
            self.arrays.probabilities(text_columns(designations, descriptions)),
            self.pipeline.classes_,
        )
        return np.log(np.clip(probs, PROBABILITY_FLOOR, 1.0)).astype(np.float32)
