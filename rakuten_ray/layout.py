"""Where everything lives: the training run, the model bundle and the scoring output, the
prediction columns and the per-row image status.

Every module that writes or reads one of these folders takes its names from here, so a
layout changes in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import pandas as pd

from rakuten_ray.catalog import CLASS_CODES


class ImageStatus(str, Enum):
    """What became of a row's image, in training and in every scoring engine."""

    OK = "ok"
    MISSING = "missing"
    UNREADABLE = "unreadable"
    TOO_LARGE = "too_large"
    #: The row's productid or imageid is not a valid integer: no file name to look up.
    INVALID_ID = "invalid_id"
    #: The bundle has no image model: every row is scored from its text.
    NO_IMAGE_MODEL = "no_image_model"


# --------------------------------------------------------------------------------------------
# Prediction columns
# --------------------------------------------------------------------------------------------

#: 0-based position of a row in the whole input: the key that resuming and ordering use.
ROW_COLUMN = "row"
#: The input's row index travels under this column name and comes out under it.
INDEX_COLUMN = "index"
#: A digest of what a row's output depends on (its texts, ids and image bytes), taken at
#: staging: ``--previous`` carries a row over when it and the bundle's id match.
CONTENT_HASH_COLUMN = "content_hash"
#: The id of the bundle that scored a row.
BUNDLE_ID_COLUMN = "bundle_id"
TEXT_PROBS = [f"text_prob_{code}" for code in CLASS_CODES]
IMAGE_PROBS = [f"image_prob_{code}" for code in CLASS_CODES]
FINAL_PROBS = [f"prob_{code}" for code in CLASS_CODES]
#: Between the image preparation and the image model stages, a batch carries each distinct
#: eval crop of the image models in a column named from this prefix.
CROP_PREFIX = "pixels_"
#: The predictions' columns, in order, with their pandas types.
PREDICTION_DTYPES: dict[str, str] = {
    ROW_COLUMN: "int64", INDEX_COLUMN: "Int64", "productid": "Int64", "imageid": "Int64",
    "prdtypecode": "int64", "confidence": "float64", "text_prdtypecode": "int64",
    "image_prdtypecode": "Int64", "image_status": "object", "decision": "object",
    "review_reason": "object", BUNDLE_ID_COLUMN: "object", CONTENT_HASH_COLUMN: "object",
    **dict.fromkeys(FINAL_PROBS, "float64"),
}  # fmt: skip


def empty_predictions() -> pd.DataFrame:
    """The predictions' columns and types, with no rows."""
    return pd.DataFrame(
        {name: pd.Series(dtype=dtype) for name, dtype in PREDICTION_DTYPES.items()}
    )


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BundleLayout:
    """A model bundle: everything scoring reads, sealed by ``manifest.json``.

    Paths inside the bundle are relative (as the manifest lists them); :meth:`path` makes
    one absolute.
    """

    root: Path

    MANIFEST = "manifest.json"
    FUSION = "fusion.json"
    CONFIG = "config.yaml"
    META_WITH_IMAGE = "meta_with_image.skops"
    META_TEXT_ONLY = "meta_text_only.skops"
    #: The review policy (:class:`rakuten_ray.fusion.routing.ReviewPolicy`).
    REVIEW = "review.json"
    MODELS = "models"

    def path(self, relative: str) -> Path:
        """Absolute path of a file or folder inside the bundle."""
        return self.root / relative

    @classmethod
    def model(cls, name: str) -> str:
        """Relative folder of base model ``name``."""
        return f"{cls.MODELS}/{name}"


@dataclass(frozen=True)
class RunLayout:
    """A training run's folder (``rakuten-ray train --out``)."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def splits(self) -> Path:
        return self.root / "splits.json"

    @property
    def images_only_splits(self) -> Path:
        """The image-only rows' own split, saved like :attr:`splits`."""
        return self.root / "splits_images_only.json"

    @property
    def identity(self) -> Path:
        """What the run trains on (config and data fingerprint): ``--resume`` checks it."""
        return self.root / "run.json"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def heldout_labels(self) -> Path:
        """Class index of every held-out row: reports redraw calibration from it."""
        return self.root / "heldout_labels.parquet"

    @property
    def base_models(self) -> Path:
        return self.root / "base_models"

    def model_dir(self, name: str) -> Path:
        """Working folder of base model ``name`` (checkpoints, fitted model, refit)."""
        return self.base_models / name

    def heldout_scores(self, name: str) -> Path:
        """Base model ``name``'s raw scores on the held-out rows."""
        return self.model_dir(name) / "heldout_scores.parquet"

    def finished(self, name: str) -> Path:
        """The record written when base model ``name`` has trained and scored its held-out
        rows: its fit and the sha256 of its files (a resumed run reuses the model by it)."""
        return self.model_dir(name) / "finished.json"

    @property
    def bundle(self) -> BundleLayout:
        return BundleLayout(self.root / "bundle")


@dataclass(frozen=True)
class ScoringLayout:
    """A scoring run's folder (``rakuten-ray score --out``)."""

    root: Path

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def record(self) -> Path:
        """The bundle and input being scored, and the staged rows: ``--resume`` checks it."""
        return self.root / "run.json"

    @property
    def submission(self) -> Path:
        return self.root / "submission.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def changes(self) -> Path:
        """The rows whose code differs from the ``--previous`` output's."""
        return self.root / "changes.parquet"

    @property
    def scratch(self) -> Path:
        """Partitioned copies of the predictions while the run finishes (then removed)."""
        return self.root / "scratch"

    def parquet_dir(self) -> Path:
        """The Parquet folder: ``predictions/`` inside a scoring output, or the folder
        itself when it already is one."""
        return self.predictions if self.predictions.is_dir() else self.root


@dataclass(frozen=True)
class AuditLayout:
    """An audit's folder (``rakuten-ray audit --out``)."""

    root: Path

    @property
    def suspects(self) -> Path:
        """Every disputed product, most suspect first."""
        return self.root / "suspects.parquet"

    @property
    def suspects_csv(self) -> Path:
        return self.root / "suspects.csv"

    @property
    def summary(self) -> Path:
        return self.root / "summary.json"

    @property
    def page(self) -> Path:
        return self.root / "index.html"

    @property
    def thumbnails(self) -> Path:
        """Downscaled copies of the page's images, referenced by relative paths."""
        return self.root / "thumbs"
