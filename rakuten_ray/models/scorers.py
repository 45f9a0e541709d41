"""What a trained model offers scoring, by modality.

A text scorer turns raw product fields into per-class scores, an image scorer decoded
pictures; both give logits (scores whose softmax is the model's probability). The scoring
stages call :meth:`TextScorer.scores` and :meth:`ImageScorer.logits` on batches; training
calls :meth:`Scorer.score_rows` on the held-out rows, so fusion is fitted on exactly what
scoring computes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np
import pandas as pd
from PIL import Image

from rakuten_ray.images import load_image
from rakuten_ray.layout import ImageStatus

#: Images decoded at a time when scoring held-out rows: memory stays bounded by this.
HELDOUT_IMAGE_CHUNK = 256


class Scorer(ABC):
    """A trained model loaded for scoring."""

    @abstractmethod
    def score_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Logits of the catalogue rows this model can score, indexed like ``rows``."""


class TextScorer(Scorer):
    """A text model: raw ``designation`` and ``description`` fields in, logits out."""

    @abstractmethod
    def scores(self, designations: Sequence[object], descriptions: Sequence[object]) -> np.ndarray:
        """Scores of shape ``(n, 27)`` whose softmax is the model's probability."""

    def score_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Every row has a text (an empty one is scored as such)."""
        scores = self.scores(rows["designation"].tolist(), rows["description"].tolist())
        return pd.DataFrame(scores, index=rows.index)


class ImageScorer(Scorer):
    """An image model: decoded RGB pictures in, logits out."""

    @abstractmethod
    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Logits of shape ``(len(images), 27)``, in input order."""

    def score_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Rows whose ``image_path`` holds a usable image, decoded a chunk at a time."""
        parts = []
        for start in range(0, len(rows), HELDOUT_IMAGE_CHUNK):
            chunk = rows.iloc[start : start + HELDOUT_IMAGE_CHUNK]
            loaded = [load_image(path) for path in chunk["image_path"]]
            usable = np.array([item.status == ImageStatus.OK for item in loaded], dtype=bool)
            logits = self.logits([item.image for item in loaded if item.status == ImageStatus.OK])
            parts.append(pd.DataFrame(logits, index=chunk.index[usable]))
        return pd.concat(parts) if parts else pd.DataFrame(index=rows.index[:0])
