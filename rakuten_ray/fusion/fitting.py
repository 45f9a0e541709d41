"""Fitting the whole fusion on held-out base-model scores.

One temperature per base model, blend weights and both meta-models are fitted on rows no
base model trained on (validation + internal test). Reported figures are measured where the
measured part did not fit: base models on the internal-test rows; the stacks by K-fold
cross-fitting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from rakuten_ray.config import FusionParams
from rakuten_ray.fusion.blending import blend, fit_blend_weights
from rakuten_ray.fusion.calibration import apply_temperature, calibration_report, fit_temperature
from rakuten_ray.fusion.stacking import (
    MetaModel,
    PooledMetaModel,
    StackingMetaModel,
    concat_blocks,
    cross_fitted_stack_probs,
)
from rakuten_ray.metrics import classification_summary


@dataclass(frozen=True)
class ScoredModel:
    """A base model's held-out scores (rows indexed by catalogue row)."""

    name: str
    kind: str
    scores: pd.DataFrame


@dataclass
class ModalityFit:
    """Calibrated, blended probabilities of one modality on its held-out rows."""

    names: list[str]
    temperatures: list[float]
    weights: list[float]
    probs: pd.DataFrame
    report: dict[str, Any]


def fit_modality(
    models: Sequence[ScoredModel], y_idx: pd.Series, test_rows: pd.Index, blend_method: str
) -> ModalityFit:
    """Temperatures and blend weights for one modality.

    Rows are those every model of the modality scored (for images: rows with a usable image).

    Args:
        models: the modality's base models with their held-out scores.
        y_idx: class index of every held-out row.
        test_rows: internal-test rows, where each model's own metrics are measured.
        blend_method: ``inverse_log_loss`` or ``optimal``.
    """
    rows = models[0].scores.index
    for model in models[1:]:
        rows = rows.intersection(model.scores.index)
    labels = y_idx.loc[rows].to_numpy()
    on_test = rows.isin(test_rows)
    temperatures, calibrated, per_model = [], [], {}
    for model in models:
        logits = model.scores.loc[rows].to_numpy(dtype=np.float64)
        # The TF-IDF model's scores are log-probabilities: its temperature sharpens or softens
        # its sigmoid-calibrated probabilities, which are often too flat over 27 classes.
        temperature = fit_temperature(logits, labels)
        probs = apply_temperature(logits, temperature)
        temperatures.append(float(temperature))
        calibrated.append(probs)
        per_model[model.name] = {
            "kind": model.kind,
            "internal_test": classification_summary(probs[on_test], labels[on_test]),
            "calibration": calibration_report(logits[on_test], labels[on_test], temperature),
        }
    fit = fit_blend_weights(calibrated, labels, blend_method)
    blended = blend(calibrated, fit.weights)
    report = {
        "rows": int(len(rows)),
        "models": per_model,
        "blend": {
            "method": blend_method,
            "weights": dict(zip([m.name for m in models], map(float, fit.weights), strict=True)),
            "rules": fit.report,
            "internal_test": classification_summary(blended[on_test], labels[on_test]),
        },
    }
    return ModalityFit(
        names=[m.name for m in models],
        temperatures=temperatures,
        weights=[float(w) for w in fit.weights],
        probs=pd.DataFrame(blended, index=rows),
        report=report,
    )


@dataclass
class StackFit:
    """Both meta-models and their honest (cross-fitted) scores."""

    with_image: MetaModel | None
    text_only: MetaModel
    report: dict[str, Any]
    #: The final system's out-of-fold probabilities of every held-out row with text.
    heldout_probs: pd.DataFrame
    #: Which of those rows the stack scored (the others went through the text-only path).
    has_image: np.ndarray


def _meta_factories(C: float, structure: str, n_classes: int) -> dict[str, Callable[[], MetaModel]]:
    factories: dict[str, Callable[[], MetaModel]] = {
        "logistic": lambda: StackingMetaModel(C=C, n_classes=n_classes),
        "pooled": lambda: PooledMetaModel(n_classes=n_classes),
    }
    return factories if structure == "auto" else {structure: factories[structure]}


def fit_meta_model(
    blocks: list[np.ndarray], y_idx: np.ndarray, C: float, structure: str, folds: int, seed: int
) -> tuple[MetaModel, np.ndarray, dict[str, Any]]:
    """Fit the meta-model on ``blocks``; with ``auto``, the structure of lower out-of-fold loss.

    Returns:
        The meta-model fitted on every row, its out-of-fold probabilities and a report of
        each candidate's out-of-fold scores.
    """
    n_classes = blocks[0].shape[1]
    candidates = {
        name: cross_fitted_stack_probs(blocks, y_idx, factory, folds, seed)
        for name, factory in _meta_factories(C, structure, n_classes).items()
    }
    report = {name: classification_summary(oof, y_idx) for name, oof in candidates.items()}
    chosen = min(report, key=lambda name: report[name]["log_loss"])
    model = _meta_factories(C, chosen, n_classes)[chosen]().fit(concat_blocks(blocks), y_idx)
    return model, candidates[chosen], {"structure": chosen, "candidates": report}


def fit_stack(
    text: ModalityFit,
    image: ModalityFit | None,
    y_idx: pd.Series,
    test_rows: pd.Index,
    params: FusionParams,
    seed: int,
) -> StackFit:
    """Fit the stack on ``[P_text, P_image]`` and the text-only meta-model on ``[P_text]``.

    The final system's honest estimate takes, for each held-out row, the out-of-fold
    prediction of the meta-model that scoring would use for it; ``final_internal_test`` is
    that estimate on the internal-test rows, where the base models are measured too.
    """
    all_rows = text.probs.index
    y_all = y_idx.loc[all_rows].to_numpy()
    text_block = text.probs.to_numpy()
    text_only, final, choice = fit_meta_model(
        [text_block], y_all, params.stack_C, params.stack, params.cv_folds, seed
    )
    report: dict[str, Any] = {
        "text_only": classification_summary(final, y_all),
        "text_only_choice": choice,
        "text_blend": classification_summary(text_block, y_all),
    }
    with_image = None
    has_image = np.zeros(len(all_rows), dtype=bool)
    if image is not None and len(image.probs) > 0:
        rows = image.probs.index
        y_img = y_idx.loc[rows].to_numpy()
        positions = all_rows.get_indexer(rows)
        blocks = [text.probs.loc[rows].to_numpy(), image.probs.to_numpy()]
        with_image, stacked, choice = fit_meta_model(
            blocks, y_img, params.stack_C, params.stack, params.cv_folds, seed
        )
        report["with_image"] = classification_summary(stacked, y_img)
        report["with_image_choice"] = choice
        report["text_only_on_image_rows"] = classification_summary(final[positions], y_img)
        report["image_blend"] = classification_summary(blocks[1], y_img)
        final[positions] = stacked
        has_image[positions] = True
    report["final"] = classification_summary(final, y_all)
    on_test = all_rows.isin(test_rows)
    report["final_internal_test"] = classification_summary(final[on_test], y_all[on_test])
    return StackFit(
        with_image=with_image,
        text_only=text_only,
        report=report,
        heldout_probs=pd.DataFrame(final, index=all_rows),
        has_image=has_image,
    )


def calibrated_blend(
    scores: Sequence[np.ndarray], temperatures: Sequence[float], weights: Sequence[float]
) -> np.ndarray:
    """Blend of temperature-scaled scores: what the scoring stages compute per modality."""
    return blend(
        [apply_temperature(s, t) for s, t in zip(scores, temperatures, strict=True)], weights
    )
