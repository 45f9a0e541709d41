"""A readable summary of a catalogue folder, after its schema checks."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from rakuten_ray.catalog import (
    CATEGORY_NAMES,
    CLASS_CODES,
    CatalogueDir,
    image_filename,
    read_products,
)


def image_coverage(products: pd.DataFrame, image_dir: Path) -> int:
    """How many products have their image file in ``image_dir`` (one directory listing)."""
    present = set(os.listdir(image_dir)) if image_dir.is_dir() else set()
    ids = zip(products["imageid"], products["productid"], strict=True)
    names = (image_filename(imageid, productid) for imageid, productid in ids)
    return sum(name in present for name in names)


def describe_catalogue(root: Path) -> str:
    """Validate the raw layout in ``root`` and describe rows, classes and image coverage.

    Raises:
        SchemaError: a file is missing or malformed.
    """
    catalogue = CatalogueDir(root)
    labelled = catalogue.labelled()
    lines = [f"catalogue {root}"]
    covered = image_coverage(labelled, catalogue.image_dir("train"))
    lines.append(f"  train: {len(labelled)} labelled rows, {covered} with an image file")
    if catalogue.x_test.is_file():
        test = read_products(catalogue.x_test)
        covered = image_coverage(test, catalogue.image_dir("test"))
        lines.append(f"  test:  {len(test)} rows, {covered} with an image file")
    counts = labelled["prdtypecode"].value_counts()
    lines.append("  classes (code, rows, share, name):")
    for code in CLASS_CODES:
        rows = int(counts.get(code, 0))
        share = 100.0 * rows / max(len(labelled), 1)
        lines.append(f"    {code:>5} {rows:>7} {share:5.1f}%  {CATEGORY_NAMES[code]}")
    return "\n".join(lines)
