"""The three scoring stages, shared by the in-process and the Ray Data engines.

Each stage is a callable class: built once from a verified bundle (its models load once per
instance, i.e. once per Ray actor) and called on a pandas batch, to which it adds columns.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from rakuten_ray.batching import map_fixed_batches
from rakuten_ray.bundle import load_bundle
from rakuten_ray.catalog import CLASS_CODES, image_path
from rakuten_ray.config import StagePool
from rakuten_ray.fusion.fitting import calibrated_blend
from rakuten_ray.fusion.stacking import load_meta_model
from rakuten_ray.images import ImageStatus, LoadedImage, load_image
from rakuten_ray.models.registry import load_text_scorer
from rakuten_ray.scoring.rows import INDEX_COLUMN, ROW_COLUMN, normalise_batch

TEXT_PROBS = [f"text_prob_{code}" for code in CLASS_CODES]
IMAGE_PROBS = [f"image_prob_{code}" for code in CLASS_CODES]
FINAL_PROBS = [f"prob_{code}" for code in CLASS_CODES]
#: ``image_status`` of a row whose productid or imageid is not a valid integer.
INVALID_ID = "invalid_id"
#: ``image_status`` when the bundle has no image model.
NO_IMAGE_MODEL = "no_image_model"
#: Image decoding threads per image stage: PIL releases the GIL while decoding, so a few
#: threads keep the model fed while it runs.
DECODE_THREADS = 4


def empty_output() -> pd.DataFrame:
    """The predictions' columns and types, with no rows."""
    columns = {
        ROW_COLUMN: "int64", INDEX_COLUMN: "Int64", "productid": "Int64", "imageid": "Int64",
        "prdtypecode": "int64", "confidence": "float64", "text_prdtypecode": "int64",
        "image_prdtypecode": "Int64", "image_status": "object",
        **dict.fromkeys(FINAL_PROBS, "float64"),
    }  # fmt: skip
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def pool_threads(pool: StagePool) -> int:
    """Torch threads of a stage: the CPUs its pool entry gives each actor, rounded up."""
    return max(1, math.ceil(pool.num_cpus))


def limit_threads(num_threads: int) -> None:
    """Set torch's intra-op threads (kernels may round differently with another count)."""
    import torch

    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)


def _with_block(batch: pd.DataFrame, columns: list[str], values: np.ndarray) -> pd.DataFrame:
    block = pd.DataFrame(values, columns=columns, index=batch.index)
    return pd.concat([batch.drop(columns=columns, errors="ignore"), block], axis=1)


class TextStage:
    """Normalises raw rows and adds calibrated, blended text probabilities.

    ``num_threads`` (torch threads while it runs) and ``micro_batch_size`` (rows per model
    call) default to the bundle's ``scoring.text`` settings; the output is byte-identical for
    equal settings.
    """

    def __init__(
        self, bundle_dir: str, num_threads: int | None = None, micro_batch_size: int | None = None
    ) -> None:
        bundle = load_bundle(bundle_dir)
        pool = bundle.scoring().text
        self.num_threads = num_threads or pool_threads(pool)
        limit_threads(self.num_threads)
        size = micro_batch_size or pool.micro_batch_size
        self.entries = bundle.fusion.text_models
        self.scorers = [
            load_text_scorer(e.kind, bundle.path(e.folder), batch_size=size) for e in self.entries
        ]

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        limit_threads(self.num_threads)  # the in-process engine runs stages one after another
        rows = normalise_batch(batch)
        designations, descriptions = rows["designation"].tolist(), rows["description"].tolist()
        scores = [scorer.scores(designations, descriptions) for scorer in self.scorers]
        probs = calibrated_blend(
            scores, [e.temperature for e in self.entries], [e.weight for e in self.entries]
        )
        return _with_block(rows, TEXT_PROBS, probs)


class ImageStage:
    """Loads each row's image safely and adds blended image probabilities and a status.

    ``num_threads`` and ``micro_batch_size`` (images per model call) default to the bundle's
    ``scoring.image`` settings.
    """

    def __init__(
        self,
        bundle_dir: str,
        image_dir: str,
        num_threads: int | None = None,
        micro_batch_size: int | None = None,
    ) -> None:
        from rakuten_ray.models.vision import load_image_model

        bundle = load_bundle(bundle_dir)
        pool = bundle.scoring().image
        self.num_threads = num_threads or pool_threads(pool)
        limit_threads(self.num_threads)
        size = micro_batch_size or pool.micro_batch_size
        self.image_dir = Path(image_dir)
        self.entries = bundle.fusion.image_models
        self.models = [
            load_image_model(bundle.path(e.folder), batch_size=size) for e in self.entries
        ]
        self.decoder = ThreadPoolExecutor(DECODE_THREADS)

    def _load(self, imageid: object, productid: object) -> LoadedImage | None:
        if pd.isna(imageid) or pd.isna(productid):
            return None
        return load_image(image_path(self.image_dir, int(imageid), int(productid)))

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        probs = np.full((len(batch), len(CLASS_CODES)), np.nan)
        if not self.models:
            return _with_block(batch.assign(image_status=NO_IMAGE_MODEL), IMAGE_PROBS, probs)
        limit_threads(self.num_threads)
        loaded = list(self.decoder.map(self._load, batch["imageid"], batch["productid"]))
        status = [INVALID_ID if item is None else item.status.value for item in loaded]
        usable = [i for i, item in enumerate(loaded) if item and item.status == ImageStatus.OK]
        if usable:
            images = [loaded[i].image for i in usable]
            scores = [model.logits(images) for model in self.models]
            probs[usable] = calibrated_blend(
                scores, [e.temperature for e in self.entries], [e.weight for e in self.entries]
            )
        return _with_block(batch.assign(image_status=status), IMAGE_PROBS, probs)


class FusionStage:
    """Applies the stack (or the text-only meta-model) and writes the output columns.

    ``micro_batch_size`` is the rows per meta-model call (default: the bundle's setting).
    """

    def __init__(self, bundle_dir: str, micro_batch_size: int | None = None) -> None:
        bundle = load_bundle(bundle_dir)
        self.micro_batch_size = micro_batch_size or bundle.scoring().fusion.micro_batch_size
        fusion = bundle.fusion
        self.text_only = load_meta_model(bundle.path(fusion.meta_text_only))
        self.with_image = (
            load_meta_model(bundle.path(fusion.meta_with_image)) if fusion.meta_with_image else None
        )

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        codes = np.asarray(CLASS_CODES, dtype=np.int64)
        text = batch[TEXT_PROBS].to_numpy(dtype=np.float64)
        image = batch[IMAGE_PROBS].to_numpy(dtype=np.float64)
        has_image = (batch["image_status"] == ImageStatus.OK.value).to_numpy()
        size, width = self.micro_batch_size, len(CLASS_CODES)
        final = map_fixed_batches(self.text_only.predict_proba, text, size, width)
        if self.with_image is not None and has_image.any():
            both = np.concatenate([text[has_image], image[has_image]], axis=1)
            final[has_image] = map_fixed_batches(self.with_image.predict_proba, both, size, width)
        image_codes = pd.array(codes[np.nan_to_num(image).argmax(axis=1)], dtype="Int64")
        image_codes[~has_image] = pd.NA
        out = batch[[ROW_COLUMN, INDEX_COLUMN, "productid", "imageid"]].copy()
        out["prdtypecode"] = codes[final.argmax(axis=1)]
        out["confidence"] = final.max(axis=1)
        out["text_prdtypecode"] = codes[text.argmax(axis=1)]
        out["image_prdtypecode"] = image_codes
        out["image_status"] = batch["image_status"].astype(str)
        return _with_block(out, FINAL_PROBS, final)
