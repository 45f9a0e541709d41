"""Checks that keep a long scoring run from quietly doing the wrong thing.

Before any model loads: the image folder must be a folder; the rows must mostly find their
image there (a wrong ``--images`` would otherwise give a "successful" run scored from text
alone); a resumed run must continue with the bundle and the input it started with. The run
records both (``OUT/run.json``) when it starts, and the staged shards once staging is
complete, so a resume neither mixes predictions nor stages its input again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from rakuten_ray.catalog import ID_COLUMNS, SchemaError, image_path
from rakuten_ray.hashing import sha256_file
from rakuten_ray.layout import ScoringLayout
from rakuten_ray.scoring.rows import as_id

#: Rows whose image is looked up before a run starts: all of them up to this many, else this
#: many spread evenly over the input (a stat per row; on network storage, milliseconds each).
IMAGE_CHECK_ROWS = 20_000
#: Missing images named in the error.
EXAMPLES = 5


def check_image_dir(image_dir: Path, needed: bool) -> None:
    """Refuse an image folder that does not exist or is not a folder (when the bundle has
    image models to feed)."""
    if not needed:
        return
    if not image_dir.exists():
        raise SchemaError(f"{image_dir}: the image folder (--images) does not exist")
    if not image_dir.is_dir():
        raise SchemaError(f"{image_dir}: the image folder (--images) is not a folder")


def _sample_ids(shards: list[Path], total: int, limit: int) -> pd.DataFrame:
    """The ids of up to ``limit`` staged rows spread evenly over all of them, parsed."""
    wanted = np.unique(np.linspace(0, total - 1, num=min(total, limit)).round().astype(np.int64))
    parts, offset = [], 0
    for shard in shards:
        rows = pq.ParquetFile(shard).metadata.num_rows
        local = wanted[(wanted >= offset) & (wanted < offset + rows)] - offset
        if len(local):
            ids = pd.read_parquet(shard, columns=list(ID_COLUMNS)).iloc[local]
            parts.append(ids.reset_index(drop=True).apply(as_id))
        offset += rows
    return pd.concat(parts, ignore_index=True)


def check_images_found(
    shards: list[Path], total: int, image_dir: Path, max_missing_share: float
) -> None:
    """Refuse a run where more than ``max_missing_share`` of the rows find no image file
    (ids that name no file count as missing), measured on up to :data:`IMAGE_CHECK_ROWS`.

    Raises:
        SchemaError: how many rows were checked and missing, and the first missing paths.
    """
    rows = _sample_ids(shards, total, IMAGE_CHECK_ROWS)
    missing: list[str] = []
    for imageid, productid in zip(rows["imageid"], rows["productid"], strict=True):
        if pd.isna(imageid) or pd.isna(productid):
            missing.append(f"(row without valid ids: imageid {imageid}, productid {productid})")
        elif not image_path(image_dir, int(imageid), int(productid)).is_file():
            missing.append(str(image_path(image_dir, int(imageid), int(productid))))
    share = len(missing) / len(rows)
    if share > max_missing_share:
        raise SchemaError(
            f"{image_dir}: {len(missing)} of {len(rows)} rows checked ({share:.0%}) find no "
            f"image, more than scoring.max_missing_image_share ({max_missing_share:.0%}); is "
            f"--images the right folder? First missing: {', '.join(missing[:EXAMPLES])}. "
            f"Pass --allow-missing-images to score them from their text"
        )


def input_fingerprint(files: list[Path]) -> str:
    """sha256 over the input files' names and contents, in order."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(f"{path.name}\0{sha256_file(path)}\0".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class ScoringRecord:
    """What a scoring run scores: the bundle's id and the input's fingerprint; and, once
    staging is complete, the number of rows staged."""

    bundle_id: str
    input_sha256: str
    staged_rows: int | None = None

    def save(self, layout: ScoringLayout) -> None:
        layout.record.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, layout: ScoringLayout) -> ScoringRecord | None:
        return cls(**json.loads(layout.record.read_text())) if layout.record.is_file() else None


def check_resumable(layout: ScoringLayout, record: ScoringRecord) -> ScoringRecord | None:
    """The interrupted run's record, if ``layout`` holds one for this bundle and input.

    Returns:
        None when there is nothing to resume (no output yet): the run starts afresh.

    Raises:
        SchemaError: the output was written with another bundle or input, or holds
            predictions without a record of either.
    """
    saved = ScoringRecord.load(layout)
    if saved is None:
        if any(layout.predictions.glob("*.parquet")):
            raise SchemaError(
                f"{layout.root}: predictions without a record of their bundle and input "
                f"({layout.record.name}); score into a new folder or use --overwrite"
            )
        return None
    if saved.bundle_id != record.bundle_id:
        raise SchemaError(
            f"{layout.root}: the interrupted run scored with bundle {saved.bundle_id}, not "
            f"{record.bundle_id}; resume with that bundle, or use --overwrite"
        )
    if saved.input_sha256 != record.input_sha256:
        raise SchemaError(
            f"{layout.root}: the input differs from the interrupted run's (fingerprint "
            f"{saved.input_sha256[:12]} then, {record.input_sha256[:12]} now); resume with "
            f"the same input, or use --overwrite"
        )
    return saved
