"""Training decides how each kind trains: the trainer table and the refit rule.

Both trainers, and the refit of a ``ray_task`` kind on every row, run in the ``tiny_run``
fixture's training (``tests/test_production_models.py`` and the scoring tests use it)."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pandas as pd

from rakuten_ray.config import model_spec_from_dict
from rakuten_ray.models.kind import TrainerName
from rakuten_ray.models.kinds import KINDS
from rakuten_ray.training.fitted import FitResult
from rakuten_ray.training.trainers import TRAINERS, refit_model


def test_every_trainer_a_kind_may_name_trains_and_every_kind_names_one() -> None:
    assert set(TRAINERS) == set(get_args(TrainerName))
    assert {kind.trainer for kind in KINDS} <= set(TRAINERS)


def test_a_deep_model_kept_at_refit_is_its_fitted_folder(tmp_path: Path) -> None:
    spec = model_spec_from_dict({"name": "m", "kind": "hf_text", "model": "some/model"})
    fitted = FitResult(tmp_path / "model")
    rows = pd.DataFrame()  # a kept model trains on nothing
    assert refit_model(spec, fitted, rows, tmp_path, seed=0) == fitted.model_dir

