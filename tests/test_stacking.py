"""Stacking meta-model: fusion gain, fixed 27-column output, honest cross-fitting, safe files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import skops.io
from sklearn.linear_model import LogisticRegression, RidgeClassifier
from threadpoolctl import threadpool_limits

from rakuten_ray.catalog import NUM_CLASSES
from rakuten_ray.fusion.stacking import (
    PooledMetaModel,
    StackingMetaModel,
    concat_blocks,
    cross_fit_folds,
    cross_fitted_stack_probs,
    load_meta_model,
)
from rakuten_ray.metrics import accuracy, log_loss, softmax
from rakuten_ray.safe_io import UntrustedContentError

K = NUM_CLASSES


@pytest.fixture(autouse=True)
def single_blas_thread() -> Iterator[None]:
    """Run BLAS on one thread: the test matrices are tiny, and on a busy shared machine the
    spinning of idle BLAS threads slows the solver down a hundredfold."""
    with threadpool_limits(limits=1, user_api="blas"):
        yield


TEXT_CLASSES = np.arange(K) < K // 2  # text tells these apart; image tells the others apart


def two_modalities(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Text and image probabilities, each informative on a different half of the classes.

    Each modality identifies its own classes but, for the other half, only knows the row
    belongs to that half: only a combination of both can tell every class apart.
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, K, size=n)
    rows = np.arange(n)

    def modality(own: np.ndarray) -> np.ndarray:
        z = rng.normal(0.0, 1.0, size=(n, K))
        z[rows, y] += np.where(own[y], 4.0, 0.0)
        z += np.where(own[y][:, None] == own[None, :], 0.0, -3.0)  # the right half, not the class
        return softmax(z)

    return modality(TEXT_CLASSES), modality(~TEXT_CLASSES), y


def fitted_model(n: int = 1_500, seed: int = 0) -> tuple[StackingMetaModel, np.ndarray]:
    text, image, y = two_modalities(n, seed)
    X = concat_blocks([text, image])
    return StackingMetaModel(C=1.0).fit(X, y), X


def test_stack_beats_each_modality() -> None:
    text, image, y = two_modalities(4_000, seed=1)
    train, test = slice(0, 2_000), slice(2_000, None)
    model = StackingMetaModel(C=1.0).fit(concat_blocks([text[train], image[train]]), y[train])
    stacked = model.predict_proba(concat_blocks([text[test], image[test]]))
    stack_acc = accuracy(y[test], stacked.argmax(axis=1))
    for block in (text, image):
        assert log_loss(stacked, y[test]) < log_loss(block[test], y[test]) - 0.3
        assert stack_acc > accuracy(y[test], block[test].argmax(axis=1)) + 0.2


def test_log_features_by_default_and_raw_option() -> None:
    text, image, y = two_modalities(1_500, seed=2)
    X = concat_blocks([text, image])
    log_model = StackingMetaModel().fit(X, y)
    raw_model = StackingMetaModel(features="raw").fit(X, y)
    assert not np.allclose(log_model.predict_proba(X), raw_model.predict_proba(X))
    with pytest.raises(ValueError, match="features"):
        StackingMetaModel(features="sqrt").fit(X, y)  # type: ignore[arg-type]


def test_all_classes_out_even_when_few_seen() -> None:
    text, image, y = two_modalities(3_000, seed=3)
    seen = np.isin(y, [0, 3, 7, 15, 20])
    model = StackingMetaModel().fit(concat_blocks([text[seen], image[seen]]), y[seen])
    probs = model.predict_proba(concat_blocks([text, image]))
    assert probs.shape == (3_000, K)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    absent = np.setdiff1d(np.arange(K), [0, 3, 7, 15, 20])
    assert probs[:, absent].max() < 1e-6 and probs.min() > 0
    # Columns are in class order: seen classes are predicted in their own column.
    assert accuracy(y[seen], probs[seen].argmax(axis=1)) > 0.9
    np.testing.assert_array_equal(model.classes_, np.arange(K))


def test_text_only_meta_model_and_single_class() -> None:
    text, _, y = two_modalities(1_000, seed=4)
    model = StackingMetaModel().fit(text, y)
    assert model.n_blocks_ == 1 and model.predict_proba(text).shape == (1_000, K)
    single = StackingMetaModel().fit(text[:10], np.full(10, 5))
    assert (single.predict(text) == 5).all()


@pytest.mark.parametrize(
    ("X", "y", "message"),
    [
        (np.full((4, 30), 0.1), np.zeros(4, dtype=int), "multiple of n_classes"),
        (np.full((4, K), np.nan), np.zeros(4, dtype=int), "NaN"),
        (np.full((4, K), 1 / K), np.zeros(5, dtype=int), "rows"),
        (np.full((4, K), 2.0), np.zeros(4, dtype=int), r"\[0, 1\]"),
        (np.full((4, K), 1 / K), np.full(4, K), "labels must lie"),
    ],
)
def test_fit_rejects_bad_inputs(X: np.ndarray, y: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StackingMetaModel().fit(X, y)


def test_predict_checks_columns() -> None:
    model, X = fitted_model()
    with pytest.raises(ValueError, match="fitted on 54"):
        model.predict_proba(X[:, :K])
    with pytest.raises(RuntimeError, match="not fitted"):
        StackingMetaModel().predict_proba(X)


@pytest.mark.parametrize(
    ("counts", "n_splits"),
    [({0: 50, 1: 50, 2: 50}, 5), ({0: 50, 1: 3, 2: 1}, 5), ({0: 2, 1: 1}, 5), ({0: 1, 1: 1}, 5)],
)
def test_folds_cover_every_row_once(counts: dict[int, int], n_splits: int) -> None:
    y = np.concatenate([[label] * n for label, n in counts.items()])
    folds = cross_fit_folds(y, n_splits, seed=42)
    expected_splits = min(n_splits, len(y))
    assert folds.shape == y.shape
    # One fold id per row and every fold used: the held-out sets partition the rows.
    assert np.array_equal(np.unique(folds), np.arange(expected_splits))


def test_cross_fitted_probs_are_out_of_fold() -> None:
    text, image, y = two_modalities(1_000, seed=5)
    y[:2] = 26  # a class with fewer members than folds
    folds = cross_fit_folds(y, 5, seed=42)
    same_blocks = dict.fromkeys(range(5), [text, image])
    oof, _ = cross_fitted_stack_probs(same_blocks, y, lambda fold: StackingMetaModel(C=1.0), folds)
    assert oof.shape == (1_000, K)
    np.testing.assert_allclose(oof.sum(axis=1), 1.0, atol=1e-12)
    # Rebuild one fold by hand: its rows come from a model fitted on the other folds only.
    X = concat_blocks([text, image])
    held_out = folds == 2
    manual = StackingMetaModel(C=1.0).fit(X[~held_out], y[~held_out]).predict_proba(X[held_out])
    np.testing.assert_allclose(oof[held_out], manual, rtol=1e-10, atol=1e-12)
    # A model fitted on all rows predicts differently: no row was scored by a model that saw it.
    in_sample = StackingMetaModel(C=1.0).fit(X, y).predict_proba(X)
    assert not np.allclose(oof, in_sample)


def test_skops_round_trip(tmp_path: Path) -> None:
    model, X = fitted_model()
    path = tmp_path / "meta.skops"
    model.save(path)
    loaded = load_meta_model(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert loaded.get_params() == model.get_params()


class Intruder:
    """A type no meta-model file should contain."""


def test_untrusted_type_refused(tmp_path: Path) -> None:
    model, _ = fitted_model()
    model.payload_ = Intruder()
    path = tmp_path / "tampered.skops"
    model.save(path)
    with pytest.raises(UntrustedContentError, match="Intruder"):
        load_meta_model(path)


def test_unexpected_estimator_refused(tmp_path: Path) -> None:
    # scikit-learn estimators skops trusts by default are still refused in a meta-model file.
    model, X = fitted_model()
    model.estimator_ = RidgeClassifier().fit(X, model.predict(X))
    swapped = tmp_path / "swapped.skops"
    model.save(swapped)
    assert skops.io.get_untrusted_types(file=swapped) == [
        "rakuten_ray.fusion.stacking.StackingMetaModel"
    ]
    with pytest.raises(TypeError, match="found RidgeClassifier"):
        load_meta_model(swapped)
    bare = tmp_path / "bare.skops"
    skops.io.dump(LogisticRegression(), bare)
    with pytest.raises(TypeError, match="expected a meta-model"):
        load_meta_model(bare)


def test_pooled_meta_model_fits_few_rows_and_round_trips(tmp_path: Path) -> None:
    text, image, y = two_modalities(1_200, seed=9)
    few = slice(0, 120)
    X = concat_blocks([text, image])
    pooled = PooledMetaModel().fit(X[few], y[few])
    probs = pooled.predict_proba(X[200:])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    assert pooled.weights_.shape == (2,) and np.all(pooled.weights_ > 0)
    # On few rows, one weight per modality generalises where 27 x 55 coefficients cannot.
    full = StackingMetaModel(C=1.0).fit(X[few], y[few]).predict_proba(X[200:])
    assert log_loss(probs, y[200:]) < log_loss(full, y[200:])
    assert log_loss(probs, y[200:]) < min(
        log_loss(text[200:], y[200:]), log_loss(image[200:], y[200:])
    )
    path = tmp_path / "pooled.skops"
    pooled.save(path)
    np.testing.assert_array_equal(
        load_meta_model(path).predict_proba(X[:10]), pooled.predict_proba(X[:10])
    )


def test_a_nested_pooled_model_keeps_its_base_and_fits_one_weight_per_block(
    tmp_path: Path,
) -> None:
    text, image, y = two_modalities(3_000, seed=11)
    # The text path's meta-model, its class biases fitted on every row with text; a few
    # dozen of those rows have an image too.
    base = PooledMetaModel().fit(text[:2_000], y[:2_000])
    few, unseen = slice(0, 60), slice(2_000, None)
    X = concat_blocks([text, image])
    nested = PooledMetaModel(base=base).fit(X[few], y[few])

    scale, image_weight = nested.weights_[0] / base.weights_[0], nested.weights_[1]
    np.testing.assert_allclose(nested.bias_, scale * base.bias_, rtol=1e-12)
    log_image = np.log(np.clip(image, 1e-6, 1.0))
    expected = softmax(scale * np.log(base.predict_proba(text)) + image_weight * log_image, axis=1)
    np.testing.assert_allclose(nested.predict_proba(X), expected, rtol=1e-9, atol=1e-12)
    # Two weights where a pooled model refits 27 biases on the same 60 rows.
    pooled = PooledMetaModel().fit(X[few], y[few])
    nested_loss = log_loss(nested.predict_proba(X[unseen]), y[unseen])
    assert nested_loss < log_loss(pooled.predict_proba(X[unseen]), y[unseen])
    assert nested_loss < log_loss(base.predict_proba(text[unseen]), y[unseen])

    path = tmp_path / "nested.skops"
    nested.save(path)
    np.testing.assert_array_equal(load_meta_model(path).predict_proba(X), nested.predict_proba(X))
    with pytest.raises(ValueError, match="its base alone pools 1"):
        PooledMetaModel(base=base).fit(text[few], y[few])
