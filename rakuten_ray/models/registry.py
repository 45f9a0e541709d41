"""Loading a saved text model by kind, behind one scoring interface."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


class TextScorer(Protocol):
    """A text model that turns raw product fields into per-class scores (logits)."""

    def scores(self, designations: Sequence[object], descriptions: Sequence[object]) -> np.ndarray:
        """Scores of shape ``(n, 27)`` whose softmax is the model's probability."""
        ...


def load_text_scorer(
    kind: str, folder: Path, device: str | None = None, batch_size: int | None = None
) -> TextScorer:
    """The saved text model of ``kind`` (``tfidf_svm`` or ``hf_text``) in ``folder``.

    ``batch_size`` sets a neural model's texts per forward pass (its default when ``None``).
    """
    if kind == "tfidf_svm":
        from rakuten_ray.models.tfidf_svm import TfidfSvmClassifier

        return TfidfSvmClassifier(folder)
    if kind == "hf_text":
        from rakuten_ray.models.transformer import TEXT_BATCH_SIZE, TextClassifier

        return TextClassifier(folder, device=device, batch_size=batch_size or TEXT_BATCH_SIZE)
    raise ValueError(f"{folder}: unknown text model kind {kind!r}")
