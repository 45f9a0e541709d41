"""The typed report of a training run, written to ``RUN/metrics.json`` and into the bundle's
manifest; the demo, the command line and the benchmarks read it through these classes.

Every score is measured where the measured part did not fit: a base model and a blend on the
internal-test rows, a stack by cross-fitting on the held-out rows.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rakuten_ray.models.runtime import RuntimeRecord


@dataclass(frozen=True)
class Scores:
    """Classification scores of probabilities against labels (:func:`~rakuten_ray.metrics.
    classification_summary`)."""

    weighted_f1: float
    accuracy: float
    log_loss: float
    brier: float
    ece: float
    classwise_ece: float
    rows: float


@dataclass(frozen=True)
class Calibration:
    """A model's temperature (the bundle's, fitted on every held-out row) and its calibration
    scores on the internal-test rows before (T = 1) and after temperature scaling, each row
    scaled by the temperature fitted without its fold (``fold_temperatures``, by fold id)."""

    temperature: float
    before: dict[str, float]
    after: dict[str, float]
    fold_temperatures: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class BaseModelReport:
    """One base model: how it was trained and how it scores once calibrated."""

    kind: str
    modality: str
    internal_test: Scores
    calibration: Calibration
    blend_weight: float
    train_seconds: float
    #: Per-epoch metrics of a model trained by epochs (empty for the TF-IDF model).
    epochs: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    #: What the held-out logits fusion was fitted on computed in: ``fp32`` on a CPU, ``bf16``
    #: or ``fp16`` on a GPU (``None``: a model without forward passes, TF-IDF).
    heldout_precision: str | None = None


@dataclass(frozen=True)
class BlendReport:
    """A modality's blend of calibrated models."""

    method: str
    weights: dict[str, float]
    rules: dict[str, Any]
    internal_test: Scores
    #: Held-out rows every model of the modality scored (for images: rows with an image).
    rows: int


@dataclass(frozen=True)
class StackReport:
    """The meta-models, scored out of fold on the held-out rows."""

    #: The final system on every held-out row: the stack where a row has an image, the
    #: text-only meta-model elsewhere.
    final: Scores
    #: The same on the internal-test rows, where the base models are measured.
    final_internal_test: Scores
    text_only: Scores
    text_blend: Scores
    text_only_choice: dict[str, Any]
    with_image: Scores | None = None
    with_image_choice: dict[str, Any] | None = None
    text_only_on_image_rows: Scores | None = None
    image_blend: Scores | None = None


@dataclass(frozen=True)
class RoutingEstimate:
    """Precision and coverage of automatic acceptance on rows the policy was not fitted on,
    with Wilson 95% intervals."""

    rows: int
    auto_rows: int
    precision: float | None
    precision_interval: tuple[float, float]
    coverage: float
    coverage_interval: tuple[float, float]


@dataclass(frozen=True)
class RoutingReport:
    """Review routing (:mod:`rakuten_ray.fusion.routing`): thresholds, expected figures, and
    the coverage-precision curve of the held-out rows."""

    target_precision: float
    #: Cross-fitted on every held-out row with text.
    expected: RoutingEstimate
    expected_internal_test: RoutingEstimate
    #: Per path (``with_image``, ``text_only``): ``global_threshold``, ``per_class`` and
    #: ``rule`` (``own``, or ``shared`` where the path's rows were too few to set it).
    thresholds: dict[str, Any]
    curve: list[dict[str, float]]
    #: Cross-fitted on each path's held-out rows (``with_image``, ``text_only``).
    expected_per_path: dict[str, RoutingEstimate] = field(default_factory=dict)


@dataclass(frozen=True)
class RowCounts:
    """How many rows each part of the protocol used."""

    train: int
    val: int
    internal_test: int
    images_only: int
    images_only_train: int
    images_only_val: int
    images_only_internal_test: int
    heldout_images: int
    heldout_with_image: int


@dataclass(frozen=True)
class TrainingReport:
    """Everything a training run measured."""

    base_models: dict[str, BaseModelReport]
    blends: dict[str, BlendReport]
    stack: StackReport
    routing: RoutingReport
    rows: RowCounts
    #: Wall time of each phase of the run, in order.
    phase_seconds: dict[str, float]
    seconds: float
    #: Each deep model's CPU runtime export and its check against PyTorch (none: scoring
    #: runs that model on PyTorch), with the precision of each and of the held-out logits.
    runtimes: dict[str, RuntimeRecord] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to ``metrics.json``."""
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainingReport:
        return _typed(cls, data)

    @classmethod
    def load(cls, path: Path) -> TrainingReport:
        """Read a run's ``metrics.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))


SUMMARY_HEADER = ["model", "weighted F1", "log loss", "ECE before T", "ECE"]


def summary_row(name: str, scores: Scores, ece_before: float | None = None) -> list[str]:
    """One line of the summary table."""
    before = f"{ece_before:.3f}" if ece_before is not None else "-"
    return [
        name, f"{scores.weighted_f1:.3f}", f"{scores.log_loss:.3f}", before, f"{scores.ece:.3f}"
    ]


def summary_rows(report: TrainingReport) -> list[list[str]]:
    """The summary table: each base model and blend (internal-test rows) and the stack
    (cross-fitted)."""
    rows = []
    for name, model in report.base_models.items():
        before = model.calibration.before["ece"]
        rows.append(summary_row(f"{name} ({model.kind})", model.internal_test, before))
    for name, blend in report.blends.items():
        rows.append(summary_row(f"{name} blend", blend.internal_test))
    rows.append(summary_row("stack (cross-fitted)", report.stack.final_internal_test))
    return rows


def format_summary(rows: list[list[str]]) -> str:
    """The summary table as plain text for the terminal."""
    widths = [max(len(r[i]) for r in [SUMMARY_HEADER, *rows]) for i in range(len(SUMMARY_HEADER))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        for row in [SUMMARY_HEADER, *rows]
    )


def _typed(hint: Any, value: Any) -> Any:
    """``value`` (plain data) rebuilt as ``hint``: dataclasses, and mappings or options of them."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in args if a is not type(None)]
        return _typed(inner, value)
    if origin is dict and dataclasses.is_dataclass(args[1]):
        return {key: _typed(args[1], item) for key, item in value.items()}
    if dataclasses.is_dataclass(hint):
        hints = typing.get_type_hints(hint)
        fields = {f.name for f in dataclasses.fields(hint)}
        return hint(**{k: _typed(hints[k], v) for k, v in value.items() if k in fields})
    return value
