"""The labelled rows a training run reads, with the image path of each row."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from pyarrow.fs import FileType

from rakuten_ray import storage
from rakuten_ray.catalog import (
    X_TRAIN_FILE,
    CatalogueDir,
    SchemaError,
    image_path,
    join_labels,
    read_labels,
    read_products,
)
from rakuten_ray.models.registry import Modality
from rakuten_ray.storage import Location
from rakuten_ray.training.parquet_catalogue import materialise_images, read_catalogue

#: Optional extra files of labelled rows whose text is unavailable: image-model training only.
X_IMAGES_ONLY_FILE = "X_images_only.csv"
Y_IMAGES_ONLY_FILE = "Y_images_only.csv"


@dataclass(frozen=True)
class TrainingData:
    """Labelled catalogue rows, and optional image-only rows for the image models."""

    labelled: pd.DataFrame
    images_only: pd.DataFrame

    def rows_for(self, modality: Modality) -> pd.DataFrame:
        """Every labelled row a model of ``modality`` learns from (image models also learn
        from the image-only rows)."""
        if modality is Modality.IMAGE:
            return pd.concat([self.labelled, self.images_only])
        return self.labelled


def with_image_paths(products: pd.DataFrame, image_dir: Path) -> pd.DataFrame:
    """Add an ``image_path`` column (absolute, built from the integer ids)."""
    out = products.copy()
    folder = image_dir.resolve()
    out["image_path"] = [
        str(image_path(folder, i, p)) for i, p in zip(out["imageid"], out["productid"], strict=True)
    ]
    return out


def is_raw_layout(data: Location) -> bool:
    """Whether ``data`` is a folder in the raw layout (it holds ``X_train_update.csv``)."""
    return storage.info(data).type == FileType.Directory and storage.is_file(
        storage.join(data, X_TRAIN_FILE)
    )


def load_training_data(data: Location) -> TrainingData:
    """Read and check a labelled catalogue before any training starts: a folder in the raw
    layout, or a Parquet catalogue (:mod:`rakuten_ray.training.parquet_catalogue`: one
    ``.parquet`` file or a folder of them, whose images are then written to this node's
    cache); a local path or an object-storage URI (a raw layout's folder is copied to this
    node's cache whole).

    Raises:
        SchemaError: a file is missing or malformed, or image-only rows reuse a row index.
        StorageError: the store refuses or cannot be reached.
    """
    if is_raw_layout(data):
        return load_raw_layout(storage.fetched(data, "catalogue folder"))
    rows = materialise_images(read_catalogue(data))
    return TrainingData(labelled=rows, images_only=rows.iloc[:0])


def load_raw_layout(data_dir: Path) -> TrainingData:
    """Read and check the raw layout in the local folder ``data_dir``.

    Raises:
        SchemaError: a file is missing or malformed, or image-only rows reuse a row index.
    """
    catalogue = CatalogueDir(data_dir)
    labelled = with_image_paths(catalogue.labelled(), catalogue.image_dir("train"))
    x_extra, y_extra = data_dir / X_IMAGES_ONLY_FILE, data_dir / Y_IMAGES_ONLY_FILE
    if x_extra.is_file() and y_extra.is_file():
        extra = join_labels(read_products(x_extra), read_labels(y_extra), y_extra)
        clash = extra.index.intersection(labelled.index)
        if len(clash):
            raise SchemaError(f"{x_extra}: row index reused from the main file: {list(clash[:5])}")
        images_only = with_image_paths(extra, catalogue.image_dir("train"))
    else:
        images_only = labelled.iloc[:0]
    return TrainingData(labelled=labelled, images_only=images_only)

