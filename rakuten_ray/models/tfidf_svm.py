"""TF-IDF + LinearSVC, the original recipe, with calibrated probabilities.

Word 1-2 grams and character 3-5 grams, each on the title and on the description, feed a
LinearSVC (C=0.2) wrapped in sigmoid calibration (3 folds). The fitted pipeline is made of
scikit-learn types only, so it persists with skops and loads without unpickling anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
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


def full_probabilities(pipeline: Pipeline, columns: pd.DataFrame) -> np.ndarray:
    """Probabilities over all 27 classes, even for classes absent when it was fitted."""
    probs = pipeline.predict_proba(columns)
    if probs.shape[1] == NUM_CLASSES:
        return probs
    out = np.zeros((len(columns), NUM_CLASSES))
    out[:, pipeline.classes_.astype(int)] = probs
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


class TfidfSvmClassifier(TextScorer):
    """A fitted TF-IDF + LinearSVC pipeline ready to score batches of products."""

    def __init__(self, folder: str | Path) -> None:
        self.pipeline: Pipeline = load_sklearn(
            Path(folder) / MODEL_FILE, CALIBRATED_CLASSIFIER_TYPES
        )

    def scores(self, designations: Sequence[object], descriptions: Sequence[object]) -> np.ndarray:
        """Log of the calibrated probabilities, shape ``(n, 27)``.

        Logs, so that every base model hands fusion scores whose softmax is its probability.
        """
        if len(designations) == 0:
            return np.empty((0, NUM_CLASSES), dtype=np.float32)
        probs = full_probabilities(self.pipeline, text_columns(designations, descriptions))
        return np.log(np.clip(probs, PROBABILITY_FLOOR, 1.0)).astype(np.float32)
