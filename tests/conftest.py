"""Shared fixtures: the real Rakuten sample (when present) and small catalogue writers."""

from __future__ import annotations

import os
from pathlib import Path

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
