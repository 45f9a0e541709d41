"""Training with a fixed seed is reproducible on CPU (scoring's bit-for-bit checks live with
the scoring, hostile-input and fault tests)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from helpers import write_tiny_text_backbone

from rakuten_ray.catalog import LABEL_COLUMN, CatalogueDir, codes_to_indices
from rakuten_ray.config import model_spec_from_dict
from rakuten_ray.models.tables import text_table
from rakuten_ray.models.tfidf_svm import fit_tfidf_svm, text_columns
from rakuten_ray.models.transformer import TextClassifier
from rakuten_ray.synthetic import generate_catalogue
from rakuten_ray.training.deep import fit_deep_model

#: What docs/reliability.md promises for a deep model retrained with the same seed on CPU.
DEEP_TOLERANCE = 1e-6
TEMPLATE = "{designation} [SEP] {description}"


@pytest.fixture(scope="module")
def rows(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("determinism")
    generate_catalogue(root, rows=240, test_rows=0, seed=5, images=False)
    return CatalogueDir(root).labelled()


def test_tfidf_svm_refits_to_the_same_probabilities(rows: pd.DataFrame) -> None:
    y = codes_to_indices(rows[LABEL_COLUMN])
    columns = text_columns(rows["designation"], rows["description"])
    first, second = (
        fit_tfidf_svm(rows["designation"], rows["description"], y, seed=7) for _ in range(2)
    )
    np.testing.assert_array_equal(first.predict_proba(columns), second.predict_proba(columns))


@pytest.mark.slow
def test_ray_train_run_repeats_with_the_same_seed(
    rows: pd.DataFrame, ray_local, tmp_path: Path
) -> None:
    """Two fine-tuning runs (shuffling, dropout, head init all seeded) give the same model."""
    backbone = write_tiny_text_backbone(tmp_path / "backbone")
    spec = model_spec_from_dict({
        "name": "tiny", "kind": "hf_text", "model": str(backbone), "template": TEMPLATE,
        "max_length": 32,
        "train": {"epochs": 1, "batch_size": 32, "learning_rate": 2e-3, "patience": 1},
        "scaling": {"num_workers": 1, "cpus_per_worker": 1, "max_failures": 0},
    })  # fmt: skip
    table = text_table(rows, TEMPLATE)
    train, val = table.iloc[:180], table.iloc[180:]
    logits = []
    for attempt in ("first", "second"):
        fit = fit_deep_model(spec, train, val, tmp_path / attempt, seed=11)
        classifier = TextClassifier(fit.model_dir, device="cpu")
        logits.append(classifier.logits(val["text"].tolist()))
    assert np.abs(logits[0] - logits[1]).max() <= DEEP_TOLERANCE
