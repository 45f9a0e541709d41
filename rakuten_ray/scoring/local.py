"""The in-process engine: the stages called on batches, each stage on a thread of its own."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import reduce
from pathlib import Path

import numpy as np
import pandas as pd

from rakuten_ray.bundle import open_bundle
from rakuten_ray.config import ScoringParams
from rakuten_ray.layout import INDEX_COLUMN, ROW_COLUMN, empty_predictions
from rakuten_ray.scoring.pipelining import pipelined
from rakuten_ray.scoring.stages import FusionStage, ImagePrepStage, ImageStage, TextStage

DEFAULT_BATCH_ROWS = 256


class FinalPipeline:
    """Scores products with a model bundle, in this process.

    Args:
        bundle_dir: a sealed bundle; each stage hashes the files it loads before loading them.
        batch_size: rows per batch through the stages.
        scoring: the stages' settings (default: the bundle's). Each stage runs with the torch
            threads and model batch size its entry gives the Ray engine's actors, so the two
            engines give identical bytes (raise ``scoring.*.num_cpus`` for more threads).

    The stages overlap, each on a thread of its own (:func:`~rakuten_ray.scoring.pipelining.
    pipelined`), unless ``scoring.overlap_stages`` is false or the text and image stages run
    different numbers of torch threads: torch's thread count is one setting for the whole
    process, so such stages run one after the other instead.
    """

    def __init__(
        self, bundle_dir: str | Path, batch_size: int = DEFAULT_BATCH_ROWS,
        scoring: ScoringParams | None = None,
    ) -> None:  # fmt: skip
        self.bundle_dir = str(bundle_dir)
        self.batch_size = batch_size
        self.scoring = scoring or open_bundle(bundle_dir).scoring()
        self.text = TextStage(self.bundle_dir, self.scoring.text)
        self.image = ImageStage(self.bundle_dir, self.scoring.image)
        self.fusion = FusionStage(self.bundle_dir, self.scoring.fusion)
        self._prep: dict[str, ImagePrepStage] = {}
        self.overlapping = (
            self.scoring.overlap_stages and self.text.num_threads == self.image.num_threads
        )

    def _prep_stage(self, image_dir: str | None) -> ImagePrepStage:
        if image_dir not in self._prep:
            pool = self.scoring.image_prep
            self._prep[image_dir] = ImagePrepStage(self.bundle_dir, image_dir, pool)
        return self._prep[image_dir]

    def predict(self, products: pd.DataFrame, image_dir: str | Path | None) -> pd.DataFrame:
        """One output row per input row, in input order.

        Args:
            products: rows with ``designation``, ``description``, ``productid``, ``imageid``;
                their index is carried to the output's ``index`` column and their position
                to ``row`` (unless the frame already has these columns, as staged inputs do).
            image_dir: folder of ``image_{imageid}_product_{productid}.jpg`` files (a path
                or URI); ``None`` when ``products`` carry their images in an ``image`` or
                ``image_uri`` column.
        """
        if INDEX_COLUMN not in products.columns:
            products = products.rename_axis(INDEX_COLUMN).reset_index()
        if ROW_COLUMN not in products.columns:
            products = products.assign(**{ROW_COLUMN: np.arange(len(products))})
        if products.empty:
            return empty_predictions()
        batches = (
            products.iloc[start : start + self.batch_size]
            for start in range(0, len(products), self.batch_size)
        )
        return pd.concat(list(self.predict_batches(batches, image_dir)), ignore_index=True)

    def predict_batches(
        self, batches: Iterable[pd.DataFrame], image_dir: str | Path | None
    ) -> Iterator[pd.DataFrame]:
        """Each batch's output rows, in order, for batches that already carry the ``index``
        and ``row`` columns (staged shards do); read lazily, a few batches ahead."""
        prep = self._prep_stage(None if image_dir is None else str(image_dir))
        stages = [self.text, prep, self.image, self.fusion]
        if self.overlapping:
            return pipelined(stages, batches)
        return (reduce(lambda batch, stage: stage(batch), stages, b) for b in batches)

    def predict_labels(self, products: pd.DataFrame, image_dir: str | Path) -> np.ndarray:
        """Final ``prdtypecode`` of each row, in input order."""
        return self.predict(products, image_dir)["prdtypecode"].to_numpy()
