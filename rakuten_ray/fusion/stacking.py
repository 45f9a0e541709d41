"""Stacking meta-classifier on calibrated, blended per-modality probabilities.

The meta-model is a multinomial logistic regression on the concatenated probability blocks
``[P_text, P_image]`` (54 columns), or on ``[P_text]`` alone (27 columns) for the fusion path of
rows without a usable image. It always answers with one probability per class in class order,
even for classes it never saw in training, so downstream code can rely on the shape.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold, StratifiedKFold

from rakuten_ray.catalog import NUM_CLASSES
from rakuten_ray.metrics import check_labels, check_matrix, log_softmax, softmax, weighted_sum
from rakuten_ray.safe_io import load_sklearn, save_sklearn

StackFeatures = Literal["log", "raw"]
STACK_FEATURES: tuple[str, ...] = get_args(StackFeatures)

#: Probabilities are clipped here before the log feature transform: a zero probability would
#: give an infinite feature, and below this level calibrated probabilities carry no signal.
LOG_FEATURE_FLOOR = 1e-6

#: Probability given to classes absent from the meta-model's training rows, before
#: renormalisation: small enough never to win, non-zero so log losses stay finite.
ABSENT_CLASS_PROB = 1e-9

#: Slack above 1 tolerated in input probabilities (float32 model outputs round up a little).
PROB_TOLERANCE = 1e-6

#: The only types a saved meta-model file may contain beyond skops' default-trusted numpy and
#: builtin types. Written out, not derived from the file, so a file cannot widen its own trust.
TRUSTED_TYPES: frozenset[str] = frozenset(
    {
        "rakuten_ray.fusion.stacking.StackingMetaModel",
        "rakuten_ray.fusion.stacking.PooledMetaModel",
        "sklearn.linear_model._logistic.LogisticRegression",
    }
)


def _check_probability_block(values: np.ndarray, name: str) -> np.ndarray:
    block = check_matrix(values, name)
    if block.min() < 0 or block.max() > 1 + PROB_TOLERANCE:
        raise ValueError(
            f"{name} must hold probabilities in [0, 1], got range {block.min()}..{block.max()}"
        )
    return block


def concat_blocks(blocks: Sequence[np.ndarray]) -> np.ndarray:
    """Concatenate per-modality probability blocks column-wise, checking they align by row.

    Args:
        blocks: (rows, classes) probability matrices, e.g. ``[P_text, P_image]``.

    Returns:
        A (rows, classes * len(blocks)) float64 matrix.
    """
    if len(blocks) == 0:
        raise ValueError("need at least one probability block")
    checked = [_check_probability_block(b, f"blocks[{i}]") for i, b in enumerate(blocks)]
    for i, block in enumerate(checked):
        if block.shape != checked[0].shape:
            raise ValueError(
                f"blocks[{i}] has shape {block.shape}; every block must match blocks[0] "
                f"{checked[0].shape}"
            )
    return np.hstack(checked)


class StackingMetaModel(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression on concatenated class-probability blocks.

    Args:
        C: inverse L2 regularisation strength of the logistic regression.
        features: ``"log"`` feeds ``log(clip(p, 1e-6))`` to the linear model, so that its
            scores add log-evidence from each modality (a product of experts); ``"raw"`` feeds
            the probabilities unchanged.
        max_iter: L-BFGS iteration cap, high enough for the solver to converge.
        n_classes: number of classes, i.e. columns per block and output columns.

    Attributes:
        estimator_: the fitted ``LogisticRegression``; ``None`` when the training rows hold a
            single class (the model then predicts that class).
        classes_: ``arange(n_classes)``, the columns of :meth:`predict_proba`.
        fitted_classes_: the classes present in the training labels.
        n_features_in_: number of input columns (``n_classes`` times the number of blocks).
        n_blocks_: number of probability blocks.
    """

    def __init__(
        self,
        C: float = 1.0,
        features: StackFeatures = "log",
        max_iter: int = 5000,
        n_classes: int = NUM_CLASSES,
    ) -> None:
        self.C = C
        self.features = features
        self.max_iter = max_iter
        self.n_classes = n_classes

    def _check_settings(self) -> None:
        """The constructor's arguments, checked when :meth:`fit` uses them (scikit-learn's
        estimators keep ``__init__`` free of validation, so ``set_params`` and cloning see
        the values as given)."""
        if self.features not in STACK_FEATURES:
            raise ValueError(f"features must be one of {STACK_FEATURES}, got {self.features!r}")
        if not (np.isfinite(self.C) and self.C > 0):
            raise ValueError(f"C must be a positive finite number, got {self.C!r}")
        if self.n_classes < 2:
            raise ValueError(f"n_classes must be at least 2, got {self.n_classes}")

    def _transform(self, X: np.ndarray) -> np.ndarray:
        if self.features == "log":
            return np.log(np.clip(X, LOG_FEATURE_FLOOR, 1.0))
        return X

    def fit(self, X: np.ndarray, y: np.ndarray) -> StackingMetaModel:
        """Fit on (rows, n_classes * blocks) probabilities and class indices ``y``.

        Raises:
            ValueError: columns not a multiple of ``n_classes``, NaN, values outside [0, 1],
                label count differing from the row count, or labels out of range.
        """
        self._check_settings()
        probs = _check_probability_block(X, "X")
        if probs.shape[1] % self.n_classes:
            raise ValueError(
                f"X has {probs.shape[1]} columns; expected a multiple of n_classes="
                f"{self.n_classes} (one block of {self.n_classes} per modality)"
            )
        labels = check_labels(y, probs.shape[0], self.n_classes)
        self.fitted_classes_ = np.unique(labels)
        self.estimator_ = None
        if len(self.fitted_classes_) > 1:
            self.estimator_ = LogisticRegression(C=self.C, max_iter=self.max_iter)
            self.estimator_.fit(self._transform(probs), labels)
        self.classes_ = np.arange(self.n_classes)
        self.n_features_in_ = probs.shape[1]
        self.n_blocks_ = probs.shape[1] // self.n_classes
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities over all ``n_classes`` classes in class order; rows sum to 1.

        Raises:
            ValueError: wrong number of columns, NaN, or values outside [0, 1].
        """
        if not hasattr(self, "classes_"):
            raise RuntimeError("StackingMetaModel is not fitted; call fit first")
        probs = _check_probability_block(X, "X")
        if probs.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {probs.shape[1]} columns but the meta-model was fitted on "
                f"{self.n_features_in_} ({self.n_blocks_} block(s) of {self.n_classes})"
            )
        seen = (
            np.ones((len(probs), 1))
            if self.estimator_ is None
            else self.estimator_.predict_proba(self._transform(probs))
        )
        full = np.full((len(probs), self.n_classes), ABSENT_CLASS_PROB)
        full[:, self.fitted_classes_] = seen
        return full / full.sum(axis=1, keepdims=True)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most probable class index per row."""
        return np.argmax(self.predict_proba(X), axis=1)

    def save(self, path: str | Path) -> None:
        """Write the fitted meta-model with skops (no pickle)."""
        if not hasattr(self, "classes_"):
            raise RuntimeError("refusing to save an unfitted StackingMetaModel")
        save_sklearn(self, path)


def _fit_log_linear(
    logs: np.ndarray, labels: np.ndarray, n_classes: int, l2: float, with_bias: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Maximum-likelihood ``softmax(sum_b w_b logs[:, b] + c)`` on ``(n, blocks, classes)``
    log-scores: one weight per block and, ``with_bias``, one bias per class (ridge ``l2``),
    else no bias. A convex problem, solved with L-BFGS."""
    n, blocks, _ = logs.shape
    onehot = np.eye(n_classes)[labels]
    size = blocks + (n_classes if with_bias else 0)

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        weights, bias = theta[:blocks], theta[blocks:]
        scores = np.einsum("nbk,b->nk", logs, weights)
        if with_bias:
            scores = scores + bias
        log_probs = log_softmax(scores, axis=1)
        loss = -log_probs[np.arange(n), labels].mean() + l2 * bias @ bias
        residual = (np.exp(log_probs) - onehot) / n
        grad_w = np.einsum("nbk,nk->b", logs, residual)
        grad_b = residual.sum(axis=0) + 2 * l2 * bias if with_bias else np.empty(0)
        return float(loss), np.concatenate([grad_w, grad_b])

    start = np.zeros(size)
    start[:blocks] = 1.0 / blocks
    theta = minimize(objective, start, jac=True, method="L-BFGS-B").x
    return theta[:blocks], theta[blocks:] if with_bias else np.zeros(n_classes)


class PooledMetaModel(ClassifierMixin, BaseEstimator):
    """Log-linear pooling of probability blocks: ``softmax(sum_b w_b log P_b + c)``.

    One weight per block and one bias per class (29 parameters for two blocks), against
    ``27 x 55`` for the full logistic regression: the meta-model to use when the rows it is
    fitted on are few (a sample, or the rows with images of a small catalogue).

    With a fitted ``base`` (a pooled meta-model of the leading blocks, such as the text-only
    meta-model fitted on every row with text), the class biases are not fitted again: the
    model pools the base's scores with the remaining blocks, one weight each, and no bias.
    Rows with images are then left two weights to fit, not 29: on a few dozen such rows
    refitting 27 biases costs more than the image adds.

    Args:
        l2: ridge penalty on the class biases, so that a class absent from the training rows
            keeps a finite bias.
        n_classes: number of classes, i.e. columns per block and output columns.
        base: a fitted pooled meta-model of the first ``len(base.weights_)`` blocks.

    Attributes:
        weights_: one weight per block (the base's, scaled by the weight of its scores).
        bias_: one bias per class (with a base: its biases, scaled the same way).
        classes_: ``arange(n_classes)``.
        n_features_in_: number of input columns.
    """

    def __init__(
        self, l2: float = 1e-3, n_classes: int = NUM_CLASSES, base: PooledMetaModel | None = None
    ) -> None:
        self.l2 = l2
        self.n_classes = n_classes
        self.base = base

    def _log_blocks(self, X: np.ndarray) -> np.ndarray:
        probs = _check_probability_block(X, "X")
        if probs.shape[1] % self.n_classes:
            raise ValueError(
                f"X has {probs.shape[1]} columns; expected a multiple of n_classes={self.n_classes}"
            )
        blocks = probs.shape[1] // self.n_classes
        return np.log(np.clip(probs, LOG_FEATURE_FLOOR, 1.0)).reshape(-1, blocks, self.n_classes)

    def fit(self, X: np.ndarray, y: np.ndarray) -> PooledMetaModel:
        """Maximum-likelihood weights (and biases, without a base).

        Raises:
            ValueError: with a base, no block beyond the base's.
        """
        logs = self._log_blocks(X)
        labels = check_labels(y, logs.shape[0], self.n_classes)
        if self.base is None:
            self.weights_, self.bias_ = _fit_log_linear(
                logs, labels, self.n_classes, self.l2, with_bias=True
            )
        else:
            inner = len(self.base.weights_)
            if logs.shape[1] <= inner:
                raise ValueError(f"X has {logs.shape[1]} block(s); its base alone pools {inner}")
            base_scores = np.einsum("nbk,b->nk", logs[:, :inner], self.base.weights_)
            features = np.concatenate(
                [(base_scores + self.base.bias_)[:, None], logs[:, inner:]], axis=1
            )
            weights, _ = _fit_log_linear(features, labels, self.n_classes, 0.0, with_bias=False)
            # softmax(a (sum w_b log P_b + c) + ...) is a pooled model with weights a w_b.
            self.weights_ = np.concatenate([weights[0] * self.base.weights_, weights[1:]])
            self.bias_ = weights[0] * self.base.bias_
        self.classes_ = np.arange(self.n_classes)
        self.n_features_in_ = logs.shape[1] * self.n_classes
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Probabilities over all classes in class order; rows sum to 1."""
        if not hasattr(self, "weights_"):
            raise RuntimeError("PooledMetaModel is not fitted; call fit first")
        logs = self._log_blocks(X)
        if logs.shape[1] != len(self.weights_):
            raise ValueError(f"X has {logs.shape[1]} block(s); fitted on {len(self.weights_)}")
        blocks = [logs[:, b] for b in range(logs.shape[1])]
        return softmax(weighted_sum(blocks, self.weights_) + self.bias_, axis=1)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Most probable class index per row."""
        return np.argmax(self.predict_proba(X), axis=1)

    def save(self, path: str | Path) -> None:
        """Write the fitted meta-model with skops (no pickle)."""
        if not hasattr(self, "weights_"):
            raise RuntimeError("refusing to save an unfitted PooledMetaModel")
        save_sklearn(self, path)


MetaModel = StackingMetaModel | PooledMetaModel


def load_meta_model(path: str | Path) -> MetaModel:
    """Load a meta-model saved by ``save``, trusting only :data:`TRUSTED_TYPES`.

    Raises:
        UntrustedContentError: the file holds another type.
        TypeError: the file holds something other than one of the two meta-models (with a
            ``LogisticRegression`` inside, for the stacking one).
    """
    loaded = load_sklearn(path, TRUSTED_TYPES)
    if type(loaded) not in (StackingMetaModel, PooledMetaModel):
        raise TypeError(f"{path}: expected a meta-model, found {type(loaded).__name__}")
    # skops trusts many scikit-learn estimators by default; only a logistic regression is
    # a meta-model the stacking class knows how to run.
    inner = getattr(loaded, "estimator_", None)
    if inner is not None and type(inner) is not LogisticRegression:
        raise TypeError(f"{path}: expected a LogisticRegression, found {type(inner).__name__}")
    return loaded


def cross_fit_folds(y_idx: np.ndarray, n_splits: int = 5, seed: int = 42) -> np.ndarray:
    """Assign every row to exactly one fold for cross-fitting.

    Stratified when at least one class fills every fold: rare classes are then dealt to as many
    folds as they have rows, while the frequent ones stay balanced. When no class has
    ``n_splits`` rows, the folds are plain shuffled folds. ``n_splits`` is capped at the row
    count.

    Returns:
        (rows,) int array of fold ids in ``0..n_splits-1``.
    """
    labels = np.asarray(y_idx)
    n_splits = min(n_splits, len(labels))
    if n_splits < 2:
        raise ValueError(
            f"cross-fitting needs at least 2 rows and 2 splits, got {len(labels)} "
            f"row(s) and n_splits={n_splits}"
        )
    _, counts = np.unique(labels, return_counts=True)
    splitter = (
        StratifiedKFold(n_splits, shuffle=True, random_state=seed)
        if counts.max() >= n_splits
        else KFold(n_splits, shuffle=True, random_state=seed)
    )
    folds = np.empty(len(labels), dtype=np.int64)
    with warnings.catch_warnings():
        # Rare classes spread over fewer folds than n_splits is the intended behaviour here.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for fold, (_, held_out) in enumerate(splitter.split(np.zeros(len(labels)), labels)):
            folds[held_out] = fold
    return folds


def cross_fitted_stack_probs(
    fold_blocks: Mapping[int, Sequence[np.ndarray]],
    y_idx: np.ndarray,
    make_model: Callable[[int], MetaModel],
    folds: np.ndarray,
) -> tuple[np.ndarray, dict[int, MetaModel]]:
    """Out-of-fold meta-model probabilities: an honest estimate of the stack's quality.

    Each fold is predicted by a meta-model fitted on the other folds only.

    Args:
        fold_blocks: per fold id, the per-modality (rows, classes) probability matrices of
            every row as that fold's calibration and blend compute them (fitted without the
            fold's rows); the same blocks for every fold when nothing upstream was fitted on
            these rows.
        y_idx: true class indices.
        make_model: builds the unfitted meta-model of the fold it is given.
        folds: (rows,) fold id of every row (:func:`cross_fit_folds`).

    Returns:
        (rows, classes) out-of-fold probabilities, and the meta-model of each fold (fitted
        without it).
    """
    folds = np.asarray(folds)
    if len(np.unique(folds)) < 2:
        raise ValueError(f"cross-fitting needs rows in at least two folds, got {len(folds)} row(s)")
    out: np.ndarray | None = None
    models: dict[int, MetaModel] = {}
    for fold in np.unique(folds):
        X = concat_blocks(fold_blocks[int(fold)])
        n_classes = np.asarray(fold_blocks[int(fold)][0]).shape[1]
        labels = check_labels(y_idx, X.shape[0], n_classes)
        if len(folds) != X.shape[0]:
            raise ValueError(f"{len(folds)} fold ids for {X.shape[0]} rows")
        held_out = folds == fold
        model = models[int(fold)] = make_model(int(fold)).fit(X[~held_out], labels[~held_out])
        if out is None:
            out = np.empty((X.shape[0], n_classes))
        out[held_out] = model.predict_proba(X[held_out])
    assert out is not None  # two folds at least
    return out, models
