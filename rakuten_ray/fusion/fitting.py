"""Fitting the whole fusion on held-out base-model scores.

One temperature per base model, blend weights and both meta-models are fitted on rows no
base model trained on (validation + internal test): the bundle's fusion is fitted on all of
them. Every figure reported is measured on rows the measured part was not fitted on, by
K-fold cross-fitting over the held-out rows: for each fold, temperatures, blend weights and
meta-models are fitted on the other folds only and score the fold's rows, so the base
models' calibrated scores, the blends and the stacks of the internal-test rows are all
out-of-sample figures. Every modality and the stacks share one fold of each row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from rakuten_ray.config import FusionParams
from rakuten_ray.fusion.blending import BlendFit, BlendMethod, blend, fit_blend_weights
from rakuten_ray.fusion.calibration import apply_temperature, calibration_report, fit_temperature
from rakuten_ray.fusion.stacking import (
    MetaModel,
    PooledMetaModel,
    StackingMetaModel,
    concat_blocks,
    cross_fit_folds,
    cross_fitted_stack_probs,
)
from rakuten_ray.metrics import classification_summary


@dataclass(frozen=True)
class ScoredModel:
    """A base model's held-out scores (rows indexed by catalogue row)."""

    name: str
    kind: str
    scores: pd.DataFrame


def fusion_folds(y_idx: pd.Series, n_splits: int, seed: int) -> pd.Series:
    """The cross-fitting fold of every held-out row, stratified by class."""
    return pd.Series(cross_fit_folds(y_idx.to_numpy(), n_splits, seed), index=y_idx.index)


@dataclass
class ModalityFit:
    """Calibrated, blended probabilities of one modality on its held-out rows.

    ``temperatures``, ``weights`` and ``probs`` are fitted on every row (the bundle's);
    ``fold_probs[k]`` is the blend of every row under the temperatures and weights fitted
    without fold ``k``'s rows, and ``out_of_fold`` takes each row from its own fold's.
    """

    names: list[str]
    temperatures: list[float]
    weights: list[float]
    probs: pd.DataFrame
    report: dict[str, Any]
    fold_probs: dict[int, pd.DataFrame]
    out_of_fold: pd.DataFrame

    def on_rows(self, rows: pd.Index) -> ModalityFit:
        """The same fit with its probabilities on those of ``rows`` it has, in their order."""
        keep = rows[rows.isin(self.probs.index)]
        return replace(
            self,
            probs=self.probs.loc[keep],
            fold_probs={k: p.loc[keep] for k, p in self.fold_probs.items()},
            out_of_fold=self.out_of_fold.loc[keep],
        )


def _calibrate_and_blend(
    logits: list[np.ndarray], labels: np.ndarray, method: BlendMethod
) -> tuple[list[float], BlendFit]:
    """Each model's temperature, then the blend weights of the calibrated models."""
    temperatures = [fit_temperature(z, labels) for z in logits]
    calibrated = [apply_temperature(z, t) for z, t in zip(logits, temperatures, strict=True)]
    return temperatures, fit_blend_weights(calibrated, labels, method)


def fit_modality(
    models: Sequence[ScoredModel],
    y_idx: pd.Series,
    folds: pd.Series,
    test_rows: pd.Index,
    blend_method: BlendMethod,
) -> ModalityFit:
    """Temperatures and blend weights for one modality, on every row and cross-fitted.

    Rows are those every model of the modality scored (for images: rows with a usable image).

    Args:
        models: the modality's base models with their held-out scores.
        y_idx: class index of every held-out row.
        folds: cross-fitting fold of every held-out row (:func:`fusion_folds`).
        test_rows: internal-test rows, where each model's own metrics are measured.
        blend_method: ``inverse_log_loss`` or ``optimal``.

    Raises:
        ValueError: the modality's rows all lie in one fold, so nothing can be cross-fitted.
    """
    rows = models[0].scores.index
    for model in models[1:]:
        rows = rows.intersection(model.scores.index)
    labels = y_idx.loc[rows].to_numpy()
    fold_of = folds.loc[rows].to_numpy()
    if len(np.unique(fold_of)) < 2:
        raise ValueError(
            f"models {[m.name for m in models]}: their {len(rows)} held-out row(s) lie in "
            f"fewer than two folds; cross-fitting needs rows in at least two"
        )
    logits = [model.scores.loc[rows].to_numpy(dtype=np.float64) for model in models]
    # The TF-IDF model's scores are log-probabilities: its temperature sharpens or softens
    # its sigmoid-calibrated probabilities, which are often too flat over 27 classes.
    temperatures, fit = _calibrate_and_blend(logits, labels, blend_method)
    out_of_fold = [np.empty_like(z) for z in logits]
    fold_temperatures: list[dict[str, float]] = [{} for _ in models]
    fold_probs, oof_blend = {}, np.empty_like(logits[0])
    for fold in np.unique(fold_of):
        fit_rows, scored = fold_of != fold, fold_of == fold
        fold_t, fold_fit = _calibrate_and_blend(
            [z[fit_rows] for z in logits], labels[fit_rows], blend_method
        )
        for oof, z, t, by_fold in zip(out_of_fold, logits, fold_t, fold_temperatures, strict=True):
            oof[scored] = apply_temperature(z[scored], t)
            by_fold[str(int(fold))] = float(t)
        blended = calibrated_blend(logits, fold_t, fold_fit.weights)
        fold_probs[int(fold)] = pd.DataFrame(blended, index=rows)
        oof_blend[scored] = blended[scored]
    on_test = rows.isin(test_rows)
    per_model = {
        model.name: {
            "kind": model.kind,
            "internal_test": classification_summary(oof[on_test], labels[on_test]),
            "calibration": {
                **calibration_report(
                    z[on_test], labels[on_test], temperature, calibrated=oof[on_test]
                ),
                "fold_temperatures": by_fold,
            },
        }
        for model, z, oof, temperature, by_fold in zip(
            models, logits, out_of_fold, temperatures, fold_temperatures, strict=True
        )
    }
    names = [m.name for m in models]
    report = {
        "rows": int(len(rows)),
        "models": per_model,
        "blend": {
            "method": blend_method,
            "weights": dict(zip(names, map(float, fit.weights), strict=True)),
            "rules": fit.report,
            "internal_test": classification_summary(oof_blend[on_test], labels[on_test]),
        },
    }
    return ModalityFit(
        names=names,
        temperatures=[float(t) for t in temperatures],
        weights=[float(w) for w in fit.weights],
        probs=pd.DataFrame(calibrated_blend(logits, temperatures, fit.weights), index=rows),
        report=report,
        fold_probs=fold_probs,
        out_of_fold=pd.DataFrame(oof_blend, index=rows),
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


@dataclass(frozen=True)
class MetaFit:
    """A path's meta-model, fitted on every row, and its cross-fitted counterparts."""

    model: MetaModel
    #: The meta-model of each fold, fitted without the fold's rows.
    fold_models: dict[int, MetaModel]
    #: Every row's probabilities from its fold's meta-model.
    out_of_fold: np.ndarray
    #: The structure chosen and each candidate's out-of-fold scores.
    report: dict[str, Any]


def _meta_factories(
    C: float, structure: str, n_classes: int, base: MetaFit | None
) -> dict[str, Callable[[int | None], MetaModel]]:
    """The candidate meta-models, each a factory of the model of the fold it is given (None:
    the model of every row). ``nested`` builds on a pooled ``base`` (the text-only path's)."""
    factories: dict[str, Callable[[int | None], MetaModel]] = {
        "logistic": lambda fold: StackingMetaModel(C=C, n_classes=n_classes),
        "pooled": lambda fold: PooledMetaModel(n_classes=n_classes),
    }
    if base is not None and isinstance(base.model, PooledMetaModel):
        factories["nested"] = lambda fold: PooledMetaModel(
            n_classes=n_classes, base=base.model if fold is None else base.fold_models[fold]
        )
    return factories if structure == "auto" else {structure: factories[structure]}


def fit_meta_model(
    fits: Sequence[ModalityFit],
    y_idx: np.ndarray,
    folds: np.ndarray,
    C: float,
    structure: str,
    base: MetaFit | None = None,
) -> MetaFit:
    """Fit the meta-model on the blocks of ``fits`` (all on the same rows); with ``auto``, the
    structure of lower out-of-fold loss.

    Out of fold, each fold's rows are scored by a meta-model fitted on the other folds' rows
    of the blocks that fold's temperatures and weights compute (fitted without it too); a
    ``nested`` one builds on the ``base`` fitted without that fold.
    """
    n_classes = fits[0].probs.shape[1]
    fold_blocks = {
        int(k): [fit.fold_probs[int(k)].to_numpy() for fit in fits] for k in np.unique(folds)
    }
    factories = _meta_factories(C, structure, n_classes, base)
    candidates = {
        name: cross_fitted_stack_probs(fold_blocks, y_idx, factory, folds)
        for name, factory in factories.items()
    }
    report = {name: classification_summary(oof, y_idx) for name, (oof, _) in candidates.items()}
    chosen = min(report, key=lambda name: report[name]["log_loss"])
    final_blocks = concat_blocks([fit.probs.to_numpy() for fit in fits])
    out_of_fold, fold_models = candidates[chosen]
    return MetaFit(
        model=factories[chosen](None).fit(final_blocks, y_idx),
        fold_models=fold_models,
        out_of_fold=out_of_fold,
        report={"structure": chosen, "candidates": report},
    )


def fit_stack(
    text: ModalityFit,
    image: ModalityFit | None,
    y_idx: pd.Series,
    folds: pd.Series,
    test_rows: pd.Index,
    params: FusionParams,
) -> StackFit:
    """Fit the stack on ``[P_text, P_image]`` and the text-only meta-model on ``[P_text]``.

    The final system's honest estimate takes, for each held-out row, the out-of-fold
    prediction of the meta-model that scoring would use for it; ``final_internal_test`` is
    that estimate on the internal-test rows, where the base models are measured too.
    ``folds`` are those the modalities were cross-fitted with.
    """
    all_rows = text.probs.index
    y_all = y_idx.loc[all_rows].to_numpy()
    # The text-only path has nothing to nest in: ``nested`` pools its text block.
    text_structure = "pooled" if params.stack == "nested" else params.stack
    text_only = fit_meta_model(
        [text], y_all, folds.loc[all_rows].to_numpy(), params.stack_C, text_structure
    )
    final = text_only.out_of_fold.copy()
    report: dict[str, Any] = {
        "text_only": classification_summary(final, y_all),
        "text_only_choice": text_only.report,
        "text_blend": classification_summary(text.out_of_fold.to_numpy(), y_all),
    }
    with_image = None
    has_image = np.zeros(len(all_rows), dtype=bool)
    if image is not None and len(image.probs) > 0:
        rows = image.probs.index
        y_img = y_idx.loc[rows].to_numpy()
        positions = all_rows.get_indexer(rows)
        stack = fit_meta_model(
            [text.on_rows(rows), image], y_img, folds.loc[rows].to_numpy(), params.stack_C,
            params.stack, base=text_only,
        )  # fmt: skip
        with_image = stack.model
        report["with_image"] = classification_summary(stack.out_of_fold, y_img)
        report["with_image_choice"] = stack.report
        report["text_only_on_image_rows"] = classification_summary(final[positions], y_img)
        report["image_blend"] = classification_summary(image.out_of_fold.to_numpy(), y_img)
        final[positions] = stack.out_of_fold
        has_image[positions] = True
    report["final"] = classification_summary(final, y_all)
    on_test = all_rows.isin(test_rows)
    report["final_internal_test"] = classification_summary(final[on_test], y_all[on_test])
    return StackFit(
        with_image=with_image,
        text_only=text_only.model,
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
