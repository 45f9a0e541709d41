"""The registry of model kinds: the one place where a model's kind decides what happens.

A kind (``tfidf_svm``, ``hf_text``, ``timm_image``, ...) is a :class:`ModelKind` subclass in
its own module under :mod:`rakuten_ray.models.kinds`, decorated with :func:`register`. It
declares its settings class (read from the config), its modality, how it trains (a Ray task
or Ray Train), how its trained folder goes into the bundle and how that folder loads back as
a scorer. Every other module asks the registry, so a kind is added or replaced without
touching them (``DEVELOPERS.md`` lists the steps).

Kind modules are imported whenever a config is read: they import heavy libraries (torch,
transformers, timm) inside their methods, not at the top.
"""

from __future__ import annotations

import importlib
import pkgutil
import shutil
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from rakuten_ray.models.spec import DEFAULT_PRECISION, DeepModelSpec, ModelSpec, Precision

if TYPE_CHECKING:
    import pandas as pd

    from rakuten_ray.config import ExportParams, StagePool
    from rakuten_ray.models.runtime import HeldoutLogits, RuntimeRecord
    from rakuten_ray.models.scorers import Scorer
    from rakuten_ray.training.tasks import DeepTask


class Modality(str, Enum):
    """Which input a model reads, and so which scoring stage runs it."""

    TEXT = "text"
    IMAGE = "image"


@dataclass(frozen=True)
class FitResult:
    """A trained model folder and, for models trained by epochs, their history."""

    model_dir: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None


class ModelKind(ABC):
    """One kind of base model, from its config entry to its scorer.

    Training rows are catalogue rows (``designation``, ``description``, ``prdtypecode``,
    ``image_path``); the modality decides which rows a model sees.
    """

    #: The name a config's ``kind`` key gives.
    name: ClassVar[str]
    modality: ClassVar[Modality]
    #: The settings class a config entry of this kind is read into.
    spec_type: ClassVar[type[ModelSpec]]
    #: How it trains: ``ray_task`` (one task) or ``ray_train`` (``TorchTrainer``).
    trainer: ClassVar[str]
    #: Settings of the scoring stage's pool (:class:`~rakuten_ray.config.StagePool`) that
    #: :meth:`load_scorer` also takes, by keyword, when they are set (``hf_text``:
    #: ``tokens_per_call``).
    scorer_settings: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def fit(
        self, spec: Any, train: pd.DataFrame, val: pd.DataFrame, work_dir: Path, seed: int
    ) -> FitResult:
        """Train on ``train`` (``val`` for early stopping) into a folder under ``work_dir``."""

    @abstractmethod
    def refit(
        self, spec: Any, fitted: FitResult, rows: pd.DataFrame, work_dir: Path, seed: int
    ) -> Path:
        """The folder that goes into the bundle, once fusion is fitted: ``fitted``'s or a
        model trained again on ``rows`` (every labelled row of this modality)."""

    @abstractmethod
    def load_scorer(
        self,
        folder: Path,
        batch_size: int | None = None,
        precision: Precision = DEFAULT_PRECISION,
        device: str | None = None,
    ) -> Scorer:
        """The trained model in ``folder``, ready to score batches.

        Args:
            folder: what :meth:`refit` gave, as the bundle holds it.
            batch_size: rows per model call, the kind's default when ``None``.
            precision: the model's ``scaling.precision`` (a deep model's forward passes on a
                GPU autocast to it).
            device: where a deep model runs: a GPU when one is visible, unless given.

        A kind that names :attr:`scorer_settings` takes those as keywords too.
        """

    def load_for_pool(self, folder: Path, pool: StagePool, precision: Precision) -> Scorer:
        """:meth:`load_scorer` with a scoring pool's settings: ``micro_batch_size`` rows per
        call, and the pool's :attr:`scorer_settings` that are set. The scoring stages and
        held-out scoring load through here, so fusion is fitted on what scoring computes."""
        values = {name: getattr(pool, name) for name in self.scorer_settings}
        settings = {name: value for name, value in values.items() if value is not None}
        return self.load_scorer(folder, pool.micro_batch_size, precision, **settings)

    def resources(self, spec: Any) -> dict[str, float]:
        """What the model holds on the cluster while it trains (one Ray task)."""
        scaling = spec.scaling
        return {"CPU": scaling.cpus_per_worker, "GPU": 1.0 if scaling.use_gpu else 0.0}

    def export(
        self, model_dir: Path, dest: Path, heldout: pd.DataFrame, params: ExportParams,
        heldout_logits: HeldoutLogits | None = None,
    ) -> RuntimeRecord | None:  # fmt: skip
        """Copy a trained folder into the bundle (every file of it, sealed by the manifest);
        a kind with a faster CPU runtime adds its export, checked on ``heldout`` rows (and
        against ``heldout_logits``, the held-out logits of the same weights), and returns what
        the check measured."""
        shutil.copytree(model_dir, dest)
        return None


class DeepKind(ModelKind):
    """A kind fine-tuned with Ray Train through the shared loop
    (:mod:`rakuten_ray.training.loop`); it supplies the training task and table."""

    trainer = "ray_train"
    #: Whether an int8 copy of its ONNX export may be tried (``export.int8_text``).
    quantizable: ClassVar[bool] = False
    #: What the training loop needs: the model, its batches, its head, how it saves.
    task_type: ClassVar[type[DeepTask]]

    def task(self, spec: Any) -> DeepTask:
        """The training task of ``spec``."""
        return self.task_type(spec)

    def resources(self, spec: Any) -> dict[str, float]:
        """Every Ray Train worker's share (as ``training.deep.scaling_config`` asks for it)."""
        scaling = spec.scaling
        gpus = max(scaling.gpus_per_worker, 1.0) if scaling.use_gpu else 0.0
        return {"CPU": scaling.num_workers * scaling.cpus_per_worker,
                "GPU": scaling.num_workers * gpus}  # fmt: skip

    def export(
        self, model_dir: Path, dest: Path, heldout: pd.DataFrame, params: ExportParams,
        heldout_logits: HeldoutLogits | None = None,
    ) -> RuntimeRecord | None:  # fmt: skip
        """The folder, then its ONNX export where ``export.onnx`` is on
        (:func:`~rakuten_ray.models.runtime.check_exports`; int8 for kinds that allow it)."""
        super().export(model_dir, dest, heldout, params)
        if not params.onnx:
            return None
        from rakuten_ray.models.runtime import check_exports, evenly_spread

        scorer = self.load_scorer(dest, device="cpu", runtime="torch")
        rows = evenly_spread(heldout, params.check_rows(self.modality.value))
        try_int8 = self.quantizable and params.int8_text
        return check_exports(
            scorer, dest, rows, params.min_agreement, try_int8, heldout=heldout_logits
        )

    @abstractmethod
    def table(self, spec: Any, rows: pd.DataFrame) -> pd.DataFrame:
        """Catalogue rows as a training table (a ``label`` column and the task's input)."""

    def fit(
        self, spec: Any, train: pd.DataFrame, val: pd.DataFrame, work_dir: Path, seed: int
    ) -> FitResult:
        from rakuten_ray.training.deep import fit_deep_model

        return fit_deep_model(spec, self.table(spec, train), self.table(spec, val), work_dir, seed)

    def refit(
        self, spec: Any, fitted: FitResult, rows: pd.DataFrame, work_dir: Path, seed: int
    ) -> Path:
        from rakuten_ray.training.deep import retrain_on_all

        if spec.refit == "keep":
            return fitted.model_dir
        return retrain_on_all(self, spec, rows, work_dir / "refit", seed)


_KINDS: dict[str, ModelKind] = {}
K = TypeVar("K", bound=type[ModelKind])


def register(kind: K) -> K:
    """Class decorator: make ``kind`` available under its :attr:`~ModelKind.name`."""
    if kind.name in _KINDS and type(_KINDS[kind.name]) is not kind:
        raise ValueError(f"model kind {kind.name!r} is registered twice")
    if kind.trainer == "ray_train" and not issubclass(kind.spec_type, DeepModelSpec):
        raise TypeError(f"{kind.__name__}: Ray Train kinds take a DeepModelSpec subclass")
    _KINDS[kind.name] = kind()
    return kind


def _discover() -> None:
    """Import every module of :mod:`rakuten_ray.models.kinds` (each registers its kind)."""
    from rakuten_ray.models import kinds

    for module in pkgutil.iter_modules(kinds.__path__):
        importlib.import_module(f"{kinds.__name__}.{module.name}")


def kind_names() -> list[str]:
    """Every registered kind, sorted."""
    _discover()
    return sorted(_KINDS)


def get_kind(name: str) -> ModelKind:
    """The kind called ``name``.

    Raises:
        KeyError: no such kind (the message lists the known ones).
    """
    if name not in _KINDS:
        _discover()
    if name not in _KINDS:
        raise KeyError(f"unknown model kind {name!r}; known: {kind_names()}")
    return _KINDS[name]


def kind_of(spec: ModelSpec) -> ModelKind:
    """The kind of a model's settings."""
    return get_kind(spec.kind)
