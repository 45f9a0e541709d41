"""Fusion fitting: the bundle's temperatures and weights come from every held-out row, and
every reported figure from temperatures, weights and meta-models fitted without its rows."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from rakuten_ray.catalog import NUM_CLASSES
from rakuten_ray.config import FusionParams
from rakuten_ray.fusion.blending import fit_blend_weights
from rakuten_ray.fusion.calibration import apply_temperature, fit_temperature
from rakuten_ray.fusion.fitting import (
    ScoredModel,
    calibrated_blend,
    fit_modality,
    fit_stack,
    fusion_folds,
)
from rakuten_ray.fusion.stacking import PooledMetaModel, concat_blocks
from rakuten_ray.metrics import classification_summary

K = NUM_CLASSES
ROWS = 600
FOLD = 3


@pytest.fixture(autouse=True)
def single_blas_thread() -> Iterator[None]:
    """Tiny matrices: idle BLAS threads would only slow the solvers on a shared machine."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


def heldout_scores(seed: int) -> tuple[list[ScoredModel], pd.Series, pd.Index]:
    """Two over-confident models' logits on held-out rows (indexed like catalogue rows),
    their labels and the internal-test half of the rows."""
    rng = np.random.default_rng(seed)
    index = pd.Index(rng.permutation(10 * ROWS)[:ROWS])
    y = rng.integers(0, K, ROWS)
    models = []
    for name, signal in (("a", 3.0), ("b", 1.5)):
        logits = rng.normal(0, 4.0, (ROWS, K))
        logits[np.arange(ROWS), y] += 4.0 * signal
        models.append(ScoredModel(name, "kind", pd.DataFrame(logits, index=index)))
    return models, pd.Series(y, index=index), index[::2]


def test_reported_figures_come_from_fits_without_their_rows() -> None:
    models, y_idx, test_rows = heldout_scores(seed=0)
    folds = fusion_folds(y_idx, 5, seed=1)
    fit = fit_modality(models, y_idx, folds, test_rows, "optimal")
    logits = [m.scores.to_numpy() for m in models]
    labels = y_idx.to_numpy()

    # The bundle's temperatures and weights: fitted on every held-out row.
    everything = [fit_temperature(z, labels) for z in logits]
    assert fit.temperatures == pytest.approx(everything)

    # Fold FOLD's rows, rebuilt by hand from temperatures and weights fitted on the others.
    own, others = (folds == FOLD).to_numpy(), (folds != FOLD).to_numpy()
    temperatures = [fit_temperature(z[others], labels[others]) for z in logits]
    pairs = zip(logits, temperatures, strict=True)
    calibrated = [apply_temperature(z[others], t) for z, t in pairs]
    weights = fit_blend_weights(calibrated, labels[others], "optimal").weights
    by_hand = calibrated_blend([z[own] for z in logits], temperatures, weights)
    np.testing.assert_allclose(fit.out_of_fold.to_numpy()[own], by_hand, rtol=1e-9)
    np.testing.assert_allclose(fit.fold_probs[FOLD].to_numpy()[own], by_hand, rtol=1e-9)

    # Every internal-test figure is measured on those out-of-fold probabilities.
    on_test = y_idx.index.isin(test_rows)
    oof_a = np.empty_like(logits[0])
    for fold in range(5):
        rows = (folds == fold).to_numpy()
        t = fit_temperature(logits[0][~rows], labels[~rows])
        oof_a[rows] = apply_temperature(logits[0][rows], t)
    expected = classification_summary(oof_a[on_test], labels[on_test])
    reported = fit.report["models"]["a"]
    assert reported["internal_test"] == pytest.approx(expected)
    assert reported["calibration"]["after"]["log_loss"] == pytest.approx(expected["log_loss"])
    assert reported["calibration"]["fold_temperatures"][str(FOLD)] == pytest.approx(temperatures[0])
    blend_expected = classification_summary(fit.out_of_fold.to_numpy()[on_test], labels[on_test])
    assert fit.report["blend"]["internal_test"] == pytest.approx(blend_expected)
    # ... which are not the in-sample figures of the bundle's own fit.
    in_sample = classification_summary(fit.probs.to_numpy()[on_test], labels[on_test])
    assert fit.report["blend"]["internal_test"]["log_loss"] != pytest.approx(
        in_sample["log_loss"], abs=1e-6
    )


def test_stack_folds_see_neither_their_rows_nor_upstream_fits_on_them() -> None:
    models, y_idx, test_rows = heldout_scores(seed=2)
    folds = fusion_folds(y_idx, 5, seed=3)
    text = fit_modality(models[:1], y_idx, folds, test_rows, "inverse_log_loss")
    image = fit_modality(models[1:], y_idx, folds, test_rows, "inverse_log_loss")
    image = image.on_rows(y_idx.index[::-3])  # fewer rows, in another order, as with images
    stack = fit_stack(text, image, y_idx, folds, test_rows, FusionParams(stack="pooled"))

    rows = image.probs.index
    labels = y_idx.loc[rows].to_numpy()
    own = (folds.loc[rows] == FOLD).to_numpy()
    blocks = concat_blocks([text.fold_probs[FOLD].loc[rows], image.fold_probs[FOLD]])
    meta = PooledMetaModel().fit(blocks[~own], labels[~own])
    positions = stack.heldout_probs.index.get_indexer(rows[own])
    np.testing.assert_allclose(
        stack.heldout_probs.to_numpy()[positions], meta.predict_proba(blocks[own]), rtol=1e-7
    )
    assert stack.has_image[positions].all()
    # The bundle's meta-model is fitted on the blends of the bundle's own temperatures.
    final = concat_blocks([text.probs.loc[rows], image.probs])
    np.testing.assert_allclose(
        stack.with_image.predict_proba(final),
        PooledMetaModel().fit(final, labels).predict_proba(final),
        rtol=1e-7,
    )


def test_a_modality_in_one_fold_is_refused() -> None:
    models, y_idx, test_rows = heldout_scores(seed=4)
    folds = pd.Series(0, index=y_idx.index)
    with pytest.raises(ValueError, match="fewer than two folds"):
        fit_modality(models, y_idx, folds, test_rows, "optimal")


def test_a_nested_stack_builds_each_fold_on_the_text_only_model_fitted_without_it() -> None:
    models, y_idx, test_rows = heldout_scores(seed=5)
    folds = fusion_folds(y_idx, 5, seed=3)
    text = fit_modality(models[:1], y_idx, folds, test_rows, "inverse_log_loss")
    image = fit_modality(models[1:], y_idx, folds, test_rows, "inverse_log_loss")
    image = image.on_rows(y_idx.index[::-4])
    stack = fit_stack(text, image, y_idx, folds, test_rows, FusionParams(stack="nested"))

    all_rows, rows = text.probs.index, image.probs.index
    text_rows = (folds.loc[all_rows] != FOLD).to_numpy()
    base = PooledMetaModel().fit(
        text.fold_probs[FOLD].to_numpy()[text_rows], y_idx.loc[all_rows].to_numpy()[text_rows]
    )
    own = (folds.loc[rows] == FOLD).to_numpy()
    blocks = concat_blocks([text.fold_probs[FOLD].loc[rows], image.fold_probs[FOLD]])
    meta = PooledMetaModel(base=base).fit(blocks[~own], y_idx.loc[rows].to_numpy()[~own])
    positions = all_rows.get_indexer(rows[own])
    np.testing.assert_allclose(
        stack.heldout_probs.to_numpy()[positions], meta.predict_proba(blocks[own]), rtol=1e-7
    )
    # The bundle's stack nests the bundle's text-only meta-model.
    assert stack.with_image.base is stack.text_only
    assert stack.report["with_image_choice"]["structure"] == "nested"
    auto = fit_stack(text, image, y_idx, folds, test_rows, FusionParams())
    assert set(auto.report["with_image_choice"]["candidates"]) == {"logistic", "pooled", "nested"}
