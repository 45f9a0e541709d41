"""Scoring held-out rows for fusion: chunked and sharded, the same logits bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import write_tiny_text_backbone
from tiny_models import TINY_CONVNEXT_ARGS, TINY_IMAGE_SIZE

from rakuten_ray.catalog import LABEL_COLUMN, NUM_CLASSES, CatalogueDir
from rakuten_ray.config import model_spec_from_dict
from rakuten_ray.models.image_backbones import create_image_model
from rakuten_ray.models.transformer import (
    TextClassifier,
    TextSettings,
    create_text_model,
    save_text_model,
)
from rakuten_ray.models.vision import save_image_model
from rakuten_ray.synthetic import generate_catalogue
from rakuten_ray.synthetic_images import render_image
from rakuten_ray.training.base_models import heldout_scores

TEMPLATE = "[TITRE] {designation} [DESC] {description}"
ROWS = 40


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Catalogue rows under a shuffled index, each with a drawn picture, but for one row
    whose image is missing and one whose file is not an image."""
    root = tmp_path_factory.mktemp("heldout_rows")
    generate_catalogue(root / "catalogue", rows=ROWS, test_rows=0, seed=5, images=False)
    frame = CatalogueDir(root / "catalogue").labelled().head(ROWS)
    frame.index = np.random.default_rng(0).permutation(10 * ROWS)[:ROWS]
    paths = [root / f"{i}.jpg" for i in range(ROWS)]
    for row, (code, path) in enumerate(zip(frame[LABEL_COLUMN], paths, strict=True)):
        render_image(int(code), np.random.default_rng([5, row])).save(path, quality=85)
    paths[3].unlink()
    paths[7].write_bytes(b"not a jpeg")
    return frame.assign(image_path=[str(p) for p in paths])


@pytest.fixture(scope="module")
def text_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BERT classifier saved as training saves one."""
    root = tmp_path_factory.mktemp("heldout_text")
    torch.manual_seed(0)
    tokenizer, model = create_text_model(str(write_tiny_text_backbone(root / "backbone")))
    save_text_model(model, tokenizer, TextSettings(TEMPLATE, max_length=32), root / "model")
    return root / "model"


@pytest.fixture(scope="module")
def image_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny ConvNeXt classifier saved as training saves one."""
    torch.manual_seed(0)
    model = create_image_model("convnext_base", NUM_CLASSES, None, model_args=TINY_CONVNEXT_ARGS)
    return save_image_model(
        model, "convnext_base", TINY_IMAGE_SIZE, tmp_path_factory.mktemp("heldout_image"),
        TINY_CONVNEXT_ARGS,
    )  # fmt: skip


def test_text_logits_do_not_depend_on_the_chunks(text_model: Path, rows: pd.DataFrame) -> None:
    scorer = TextClassifier(text_model)
    whole = scorer.scores(rows["designation"].tolist(), rows["description"].tolist())
    scorer.chunk_rows = 7  # six chunks, the last one short
    chunked = scorer.score_rows(rows)
    assert chunked.dtypes.eq(np.float32).all()
    pd.testing.assert_frame_equal(chunked, pd.DataFrame(whole, index=rows.index), check_exact=True)


def spec(kind: str, folder: Path, workers: int) -> Any:
    """A spec of ``kind`` for a saved model, trained (as it were) on ``workers`` workers."""
    model = (
        {"model": str(folder), "template": TEMPLATE, "max_length": 32}
        if kind == "hf_text"
        else {"model": "convnext_base", "image_size": TINY_IMAGE_SIZE,
              "model_args": TINY_CONVNEXT_ARGS}
    )  # fmt: skip
    scaling = {"num_workers": workers, "cpus_per_worker": 1, "max_failures": 0}
    return model_spec_from_dict({"name": "m", "kind": kind, **model, "scaling": scaling})


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["hf_text", "timm_image"])
def test_two_shards_score_as_one_task(
    ray_local: Any, kind: str, text_model: Path, image_model: Path, rows: pd.DataFrame
) -> None:
    folder = text_model if kind == "hf_text" else image_model
    one, one_precision = heldout_scores(spec(kind, folder, 1), folder, rows)
    two, two_precision = heldout_scores(spec(kind, folder, 2), folder, rows)
    assert one_precision == two_precision == "fp32"  # on the CPU, whatever the setting
    # Image models leave out the rows without a usable image, the others keep their order.
    kept = rows.index if kind == "hf_text" else rows.index.delete([3, 7])
    assert list(one.index) == list(kept)
    assert one.shape[1] == NUM_CLASSES and one.dtypes.eq(np.float32).all()
    pd.testing.assert_frame_equal(two, one, check_exact=True)
