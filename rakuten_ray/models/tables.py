"""Catalogue rows as the training tables of the deep tasks (:mod:`rakuten_ray.models.tasks`):
a class ``label`` column and the task's input column."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rakuten_ray.catalog import LABEL_COLUMN, codes_to_indices
from rakuten_ray.text import prepare_texts


def text_table(rows: pd.DataFrame, template: str) -> pd.DataFrame:
    """Rows as a text model's training table: rendered ``text`` and class ``label``."""
    return pd.DataFrame(
        {
            "text": prepare_texts(rows["designation"], rows["description"], template),
            "label": codes_to_indices(rows[LABEL_COLUMN]),
        },
        index=rows.index,
    )


def image_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows whose image file exists, as an image model's table: ``path`` and ``label``."""
    present = np.array([Path(p).is_file() for p in rows["image_path"]], dtype=bool)
    kept = rows[present]
    return pd.DataFrame(
        {"path": kept["image_path"].to_numpy(), "label": codes_to_indices(kept[LABEL_COLUMN])},
        index=kept.index,
    )
