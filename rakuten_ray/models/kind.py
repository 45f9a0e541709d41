"""What a model kind declares: the base classes of :mod:`rakuten_ray.models.kinds`.

A kind (``tfidf_svm``, ``hf_text``, ``timm_image``, ...) declares its settings class (read
from the config), its modality, which trainer fits it, what that trainer needs from it, how
its trained folder goes into the bundle and how that folder loads back as a scorer. Training
(:mod:`rakuten_ray.training.trainers`) decides how each trainer runs; nothing here starts Ray.

Kind modules are imported whenever a config is read: they import heavy libraries (torch,
transformers, timm) inside their methods, not at the top.
"""

from __future__ import annotations

import shutil
from abc import ABC, abstractmethod
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from rakuten_ray.models.spec import DEFAULT_PRECISION, ModelSpec, Precision

if TYPE_CHECKING:
    import pandas as pd

    from rakuten_ray.models.runtime import HeldoutLogits, RuntimeRecord
    from rakuten_ray.models.scorers import Scorer
    from rakuten_ray.models.tasks import DeepTask

#: How a kind trains: ``ray_task`` (one Ray task) or ``ray_train`` (``TorchTrainer``).
TrainerName = Literal["ray_task", "ray_train"]


class Modality(str, Enum):
    """Which input a model reads, and so which scoring stage runs it."""

    TEXT = "text"
    IMAGE = "image"


class ScoringPool(Protocol):
    """What :meth:`ModelKind.load_for_pool` reads of a scoring stage's pool (the config's
    ``StagePool``): its call size and the settings a kind lists in ``scorer_settings``."""

    @property
    def micro_batch_size(self) -> int: ...


class ExportSettings(Protocol):
    """What :meth:`ModelKind.export` reads of the config's ``export`` section."""

    @property
    def onnx(self) -> bool: ...

    @property
    def int8(self) -> bool: ...

    @property
    def int8_min_speedup(self) -> float: ...

    @property
    def calibration_rows(self) -> int: ...

    @property
    def min_agreement(self) -> float: ...

    def check_rows(self, modality: str) -> int: ...


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
    #: The trainer that fits it (:data:`rakuten_ray.training.trainers.TRAINERS`).
    trainer: ClassVar[TrainerName]
    #: Settings of the scoring stage's pool (:class:`ScoringPool`) that :meth:`load_scorer`
    #: also takes, by keyword, when they are set (``hf_text``: ``tokens_per_call``).
    scorer_settings: ClassVar[tuple[str, ...]] = ()

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
            folder: the trained folder, as the bundle holds it.
            batch_size: rows per model call, the kind's default when ``None``.
            precision: the model's ``scaling.precision`` (a deep model's forward passes on a
                GPU autocast to it).
            device: where a deep model runs: a GPU when one is visible, unless given.

        A kind that names :attr:`scorer_settings` takes those as keywords too.
        """

    def load_for_pool(self, folder: Path, pool: ScoringPool, precision: Precision) -> Scorer:
        """:meth:`load_scorer` with a scoring pool's settings: ``micro_batch_size`` rows per
        call, and the pool's :attr:`scorer_settings` that are set. The scoring stages and
        held-out scoring load through here, so fusion is fitted on what scoring computes."""
        values = {name: getattr(pool, name) for name in self.scorer_settings}
        settings = {name: value for name, value in values.items() if value is not None}
        return self.load_scorer(folder, pool.micro_batch_size, precision, **settings)

    def export(
        self, model_dir: Path, dest: Path, heldout: pd.DataFrame, params: ExportSettings,
        heldout_logits: HeldoutLogits | None = None,
    ) -> RuntimeRecord | None:  # fmt: skip
        """Copy a trained folder into the bundle (every file of it, sealed by the manifest);
        a kind with a faster CPU runtime adds its export, checked on ``heldout`` rows (and
        against ``heldout_logits``, the held-out logits of the same weights), and returns what
        the check measured."""
        shutil.copytree(model_dir, dest)
        return None


class TaskKind(ModelKind):
    """A kind fitted by one pure function of its rows, which the ``ray_task`` trainer runs
    inside a Ray task; the fitted model comes back to the driver, which saves it."""

    trainer = "ray_task"

    @abstractmethod
    def fit_rows(self, spec: Any, rows: pd.DataFrame, seed: int) -> Any:
        """The model fitted on ``rows`` (catalogue rows of this kind's modality)."""

    @abstractmethod
    def save(self, model: Any, folder: Path) -> None:
        """Write what :meth:`fit_rows` gave into ``folder``, as :meth:`load_scorer` reads it."""


class DeepKind(ModelKind):
    """A kind fine-tuned by the ``ray_train`` trainer through the shared loop
    (:mod:`rakuten_ray.training.loop`); it declares the training task and table."""

    trainer = "ray_train"
    #: The ONNX operator types an int8 copy of its export quantises, where ``export.int8``
    #: asks for one (none: no copy is tried).
    int8_operators: ClassVar[tuple[str, ...]] = ()
    #: What the training loop needs: the model, its batches, its head, how it saves.
    task_type: ClassVar[type[DeepTask]]

    def task(self, spec: Any) -> DeepTask:
        """The training task of ``spec``."""
        return self.task_type(spec)

    @abstractmethod
    def table(self, spec: Any, rows: pd.DataFrame) -> pd.DataFrame:
        """Catalogue rows as a training table (a ``label`` column and the task's input)."""

    def export(
        self, model_dir: Path, dest: Path, heldout: pd.DataFrame, params: ExportSettings,
        heldout_logits: HeldoutLogits | None = None,
    ) -> RuntimeRecord | None:  # fmt: skip
        """The folder, then its ONNX export where ``export.onnx`` is on
        (:func:`~rakuten_ray.models.runtime.check_exports`), and its int8 copy where
        ``export.int8`` is on and the kind names operators to quantise."""
        super().export(model_dir, dest, heldout, params)
        if not params.onnx:
            return None
        from rakuten_ray.models.runtime import Int8Trial, check_exports, evenly_spread

        scorer = self.load_scorer(dest, device="cpu", runtime="torch")
        rows = evenly_spread(heldout, params.check_rows(self.modality.value))
        int8 = None
        if params.int8 and self.int8_operators:
            # Scales fixed on held-out rows the check does not score, where there are enough.
            unchecked = heldout.drop(rows.index)
            source = unchecked if len(unchecked) >= params.calibration_rows else heldout
            calibration = evenly_spread(source, params.calibration_rows)
            int8 = Int8Trial(self.int8_operators, calibration, params.int8_min_speedup)
        return check_exports(scorer, dest, rows, params.min_agreement, int8, heldout=heldout_logits)
