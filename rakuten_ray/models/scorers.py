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
from typing import ClassVar

import numpy as np
import pandas as pd
from PIL import Image

from rakuten_ray.images import load_image
from rakuten_ray.layout import ImageStatus

#: Images decoded at a time when scoring held-out rows: memory stays bounded by this.
HELDOUT_IMAGE_CHUNK = 256
#: Texts tokenised at a time when scoring held-out rows: their encodings are what grows with
#: a chunk (2,048 real texts at 384 tokens: about 20 MB of token ids as Python lists, more in
#: the tokenizer's own buffers). Each chunk pads the last batch of every token length it
#: holds, so much smaller chunks would waste forward passes.
HELDOUT_TEXT_CHUNK = 2048


class Scorer(ABC):
    """A trained model loaded for scoring."""

    #: The catalogue columns :meth:`score_rows` reads.
    columns: ClassVar[tuple[str, ...]]
    #: Rows :meth:`score_rows` holds in memory at a time, inputs and intermediates.
    chunk_rows: ClassVar[int]

    def score_rows(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Logits (float32) of the catalogue rows this model can score, indexed like ``rows``.

        Rows are scored :attr:`chunk_rows` at a time, so memory beyond the rows themselves and
        their logits does not grow with their number. Models run on fixed-shape batches, so a
        row's logits do not depend on the chunk it falls in.
        """
        starts = range(0, max(len(rows), 1), self.chunk_rows)  # one empty chunk for no rows
        return pd.concat(self.score_chunk(rows.iloc[at : at + self.chunk_rows]) for at in starts)

    @abstractmethod
    def score_chunk(self, rows: pd.DataFrame) -> pd.DataFrame:
        """:meth:`score_rows` of at most :attr:`chunk_rows` rows."""


class TextScorer(Scorer):
    """A text model: raw ``designation`` and ``description`` fields in, logits out."""

    columns = ("designation", "description")
    chunk_rows = HELDOUT_TEXT_CHUNK

    @abstractmethod
    def scores(self, designations: Sequence[object], descriptions: Sequence[object]) -> np.ndarray:
        """Scores of shape ``(n, 27)`` whose softmax is the model's probability."""

    def score_chunk(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Every row has a text (an empty one is scored as such)."""
        scores = self.scores(rows["designation"].tolist(), rows["description"].tolist())
        return pd.DataFrame(scores, index=rows.index)


class ImageScorer(Scorer):
    """An image model: decoded RGB pictures in, logits out."""

    columns = ("image_path",)
    chunk_rows = HELDOUT_IMAGE_CHUNK

    @abstractmethod
    def logits(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Logits of shape ``(len(images), 27)``, in input order."""

    def score_chunk(self, rows: pd.DataFrame) -> pd.DataFrame:
        """Rows whose ``image_path`` holds a usable image."""
        loaded = [load_image(path) for path in rows["image_path"]]
        usable = np.array([item.status == ImageStatus.OK for item in loaded], dtype=bool)
        logits = self.logits([item.image for item in loaded if item.status == ImageStatus.OK])
        return pd.DataFrame(logits, index=rows.index[usable])
