"""The scoring stages, shared by the in-process and the Ray Data engines: text, image
preparation (decode and crop, CPU only), image models, fusion.

Each stage is a callable class: built once from a bundle (it hashes and loads only the files
of its own models, once per instance, i.e. once per Ray actor) and its pool's settings, then
called on a pandas batch, to which it adds columns. Both engines hand every stage the same
settings (:class:`~rakuten_ray.config.StagePool`), resolved once per run from the bundle's
config and the command line.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd

from rakuten_ray.batching import map_fixed_batches
from rakuten_ray.bundle import Bundle, ModelEntry, open_bundle
from rakuten_ray.catalog import (
    CLASS_CODES,
    IMAGE_BYTES_COLUMN,
    IMAGE_COLUMNS,
    image_filename,
)
from rakuten_ray.config import StagePool
from rakuten_ray.fusion.fitting import calibrated_blend
from rakuten_ray.fusion.routing import ReviewPolicy
from rakuten_ray.fusion.stacking import load_meta_model
from rakuten_ray.images import LoadedImage, load_image_at, load_image_bytes
from rakuten_ray.layout import (
    BUNDLE_ID_COLUMN,
    CONTENT_HASH_COLUMN,
    CROP_PREFIX,
    FINAL_PROBS,
    IMAGE_PROBS,
    INDEX_COLUMN,
    ROW_COLUMN,
    TEXT_PROBS,
    BundleLayout,
    ImageStatus,
)
from rakuten_ray.models.registry import get_kind
from rakuten_ray.scoring.rows import normalise_batch
from rakuten_ray.storage import join


def limit_threads(num_threads: int) -> None:
    """Set torch's intra-op threads (kernels may round differently with another count)."""
    import torch

    if torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)


def _with_block(batch: pd.DataFrame, columns: list[str], values: np.ndarray) -> pd.DataFrame:
    block = pd.DataFrame(values, columns=columns, index=batch.index)
    return pd.concat([batch.drop(columns=columns, errors="ignore"), block], axis=1)


def _load_scorers(bundle: Bundle, entries: list[ModelEntry], pool: StagePool) -> list:
    """Each entry's model, hashed against the manifest, then loaded by its kind at the
    precision its entry in the bundle's config gives, with the pool's call sizes, runtime
    and threads (:meth:`~rakuten_ray.models.registry.ModelKind.load_for_pool`)."""
    specs = {spec.name: spec for spec in bundle.config.models()}
    return [
        get_kind(e.kind).load_for_pool(
            bundle.verified(e.folder), pool, specs[e.name].scaling.precision
        )
        for e in entries
    ]


def crop_columns(batch: pd.DataFrame) -> list[str]:
    """The columns of cropped images that :class:`ImagePrepStage` added to a batch."""
    return [column for column in batch.columns if column.startswith(CROP_PREFIX)]


def stacked(column: pd.Series) -> np.ndarray:
    """A non-empty column of equal-shaped arrays as one array."""
    return np.stack(column.to_numpy())


class TextStage:
    """Normalises raw rows and adds calibrated, blended text probabilities.

    ``pool`` gives the torch threads while it runs (``ceil(num_cpus)``) and the rows per model
    call (``micro_batch_size``, or for Hugging Face models ``tokens_per_call`` divided by the
    texts' padded length); equal settings give byte-identical output.
    """

    def __init__(self, bundle_dir: str, pool: StagePool) -> None:
        bundle = open_bundle(bundle_dir)
        self.num_threads = pool.threads
        limit_threads(self.num_threads)
        self.entries = bundle.fusion.text_models
        self.scorers = _load_scorers(bundle, self.entries, pool)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        limit_threads(self.num_threads)  # the in-process engine runs stages one after another
        rows = normalise_batch(batch)
        designations, descriptions = rows["designation"].tolist(), rows["description"].tolist()
        scores = [scorer.scores(designations, descriptions) for scorer in self.scorers]
        probs = calibrated_blend(
            scores, [e.temperature for e in self.entries], [e.weight for e in self.entries]
        )
        return _with_block(rows, TEXT_PROBS, probs)


class ImagePrepStage:
    """Decodes each row's image safely and crops it for the image models, on CPUs only.

    Adds the row's ``image_status`` and, for each distinct eval crop of the bundle's image
    models, a column of ``(size, size, 3)`` uint8 arrays (zeros where the image is not
    usable): fixed-size arrays that :class:`ImageStage` normalises and scores in batches. It
    reads only the models' settings, never their weights, so a pool of it scales apart from
    the model pool. ``pool.threads`` threads decode and crop the rows of a batch (Pillow
    releases the GIL for both).
    """

    def __init__(self, bundle_dir: str, image_dir: str | None, pool: StagePool) -> None:
        from rakuten_ray.models.vision import SETTINGS_FILE, read_image_settings

        bundle = open_bundle(bundle_dir)
        self.image_dir = image_dir
        settings = [
            read_image_settings(bundle.verified(f"{e.folder}/{SETTINGS_FILE}").parent)
            for e in bundle.fusion.image_models
        ]
        self.crops = {s.crop_column: (s.image_size, s.crop_transform()) for s in settings}
        self.workers = ThreadPoolExecutor(pool.threads)

    def _load(self, imageid: object, productid: object) -> LoadedImage | None:
        if pd.isna(imageid) or pd.isna(productid) or self.image_dir is None:
            return None
        return load_image_at(join(self.image_dir, image_filename(int(imageid), int(productid))))

    def _cropped(self, loaded: LoadedImage | None) -> list[np.ndarray | None]:
        usable = loaded is not None and loaded.status == ImageStatus.OK
        return [crop(loaded.image) if usable else None for _, crop in self.crops.values()]

    def _row(self, imageid: object, productid: object) -> tuple[LoadedImage | None, list]:
        loaded = self._load(imageid, productid)
        return loaded, self._cropped(loaded)

    def _carried(self, value: object, column: str) -> tuple[LoadedImage, list]:
        """A row's image from the input's own column: bytes, or a path or URI (null or
        empty: ``missing``)."""
        if column == IMAGE_BYTES_COLUMN:
            loaded = load_image_bytes(value if isinstance(value, bytes) else None)
        elif isinstance(value, str) and value:
            loaded = load_image_at(value)
        else:
            loaded = load_image_bytes(None)
        return loaded, self._cropped(loaded)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        """Reads each row's image from the input's image column (:data:`IMAGE_COLUMNS`) when
        it has one, else from the image folder by its ids; then crops it. The image column
        is dropped: nothing downstream reads it."""
        if not self.crops:
            return batch
        carried = [c for c in IMAGE_COLUMNS if c in batch.columns]
        if carried:
            column = carried[0]
            rows = list(self.workers.map(self._carried, batch[column], [column] * len(batch)))
            return self._assign(batch.drop(columns=carried), rows)
        rows = list(self.workers.map(self._row, batch["imageid"], batch["productid"]))
        return self._assign(batch, rows)

    def prepare(self, batch: pd.DataFrame, loaded: list[LoadedImage | None]) -> pd.DataFrame:
        """:meth:`__call__` for images already ``loaded`` (``None``: the row names no file),
        such as a request's uploads."""
        if not self.crops:
            return batch
        return self._assign(batch, [(item, self._cropped(item)) for item in loaded])

    def _assign(
        self, batch: pd.DataFrame, rows: list[tuple[LoadedImage | None, list]]
    ) -> pd.DataFrame:
        status = [
            ImageStatus.INVALID_ID.value if item is None else item.status.value for item, _ in rows
        ]
        columns = {"image_status": status}
        for position, (column, (size, _)) in enumerate(self.crops.items()):
            blank = np.zeros((size, size, 3), dtype=np.uint8)
            arrays = [crops[position] for _, crops in rows]
            columns[column] = [blank if array is None else array for array in arrays]
        return batch.assign(**columns)


class ImageStage:
    """Scores the cropped images :class:`ImagePrepStage` added and blends the image
    probabilities; drops the crops.

    ``pool`` as for :class:`TextStage` (``micro_batch_size``: images per model call); the
    stage runs forward passes only, on a GPU when its pool has one.
    """

    def __init__(self, bundle_dir: str, pool: StagePool) -> None:
        bundle = open_bundle(bundle_dir)
        self.num_threads = pool.threads
        limit_threads(self.num_threads)
        self.entries = bundle.fusion.image_models
        self.models = _load_scorers(bundle, self.entries, pool)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        probs = np.full((len(batch), len(CLASS_CODES)), np.nan)
        if not self.models:
            status = ImageStatus.NO_IMAGE_MODEL.value
            return _with_block(batch.assign(image_status=status), IMAGE_PROBS, probs)
        limit_threads(self.num_threads)
        usable = (batch["image_status"] == ImageStatus.OK.value).to_numpy()
        if usable.any():
            scores = [
                model.logits_of_crops(stacked(batch.loc[usable, model.settings.crop_column]))
                for model in self.models
            ]
            probs[usable] = calibrated_blend(
                scores, [e.temperature for e in self.entries], [e.weight for e in self.entries]
            )
        return _with_block(batch.drop(columns=crop_columns(batch)), IMAGE_PROBS, probs)


class FusionStage:
    """Applies the stack (or the text-only meta-model) and writes the output columns, with
    the bundle's id and the row's content digest (when it was staged).

    ``pool.micro_batch_size`` is the rows per meta-model call.
    """

    def __init__(self, bundle_dir: str, pool: StagePool) -> None:
        bundle = open_bundle(bundle_dir)
        self.micro_batch_size = pool.micro_batch_size
        fusion = bundle.fusion
        self.text_only = load_meta_model(bundle.verified(fusion.meta_text_only))
        self.with_image = (
            load_meta_model(bundle.verified(fusion.meta_with_image))
            if fusion.meta_with_image
            else None
        )
        review = bundle.verified(BundleLayout.REVIEW).read_text()
        self.review = ReviewPolicy.from_json(review)
        self.bundle_id = bundle.bundle_id

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
        image_argmax = codes[np.nan_to_num(image).argmax(axis=1)]
        image_codes = pd.array(image_argmax, dtype="Int64")
        image_codes[~has_image] = pd.NA
        text_codes = codes[text.argmax(axis=1)]
        decision, reason = self.review.decide(final, has_image, text_codes, image_argmax)
        # One frame built from whole columns: assigning them one by one cost more than the
        # meta-models on a request's one product.
        columns = {c: batch[c] for c in (ROW_COLUMN, INDEX_COLUMN, "productid", "imageid")}
        columns.update(
            {
                "prdtypecode": codes[final.argmax(axis=1)],
                "confidence": final.max(axis=1),
                "text_prdtypecode": text_codes,
                "image_prdtypecode": image_codes,
                "image_status": batch["image_status"].astype(str),
                "decision": decision,
                "review_reason": reason,
                BUNDLE_ID_COLUMN: self.bundle_id,
                # Rows scored outside a run (a data frame, a request) were never staged.
                CONTENT_HASH_COLUMN: batch.get(CONTENT_HASH_COLUMN),
            }
        )
        out = pd.DataFrame(columns, index=batch.index)
        return pd.concat([out, pd.DataFrame(final, columns=FINAL_PROBS, index=batch.index)], axis=1)
