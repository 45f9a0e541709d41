"""Typed run configuration, read from YAML, validated on load, overridable key by key.

A config file is validated by the pydantic models below (:mod:`rakuten_ray.models.settings`
says how): an unknown key, a value of the wrong type or out of its range is refused with an
error that names the key's full path (``image_models[effnet_lite0].train.epochs``) and the
file. Each model entry is read into the settings class of its ``kind``
(:mod:`rakuten_ray.models.entry`). Single keys are overridden from the command line as
``KEY=VALUE`` with dotted paths; list entries are addressed by model name. A model
downloaded from a hub without a pinned commit is a warning (:class:`UnpinnedModelWarning`).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, PlainValidator, SerializeAsAny, ValidationError, model_validator

from rakuten_ray.models.entry import model_spec_from_dict, read_model_spec
from rakuten_ray.models.registry import Modality, kind_of
from rakuten_ray.models.settings import ConfigError, Real, RuleError, Section, config_error, problem
from rakuten_ray.models.spec import ModelSpec

__all__ = [
    "ConfigError", "ExportParams", "FusionParams", "ReviewParams", "RunConfig", "ScoringParams",
    "ServingParams", "SplitParams", "StagePool", "TrainingParams", "UnpinnedModelWarning",
    "config_from_dict", "load_config", "model_spec_from_dict",
]  # fmt: skip


class UnpinnedModelWarning(UserWarning):
    """A model is downloaded from a hub at whatever revision the hub serves that day."""


class SplitParams(Section):
    """The leak-free protocol's proportions."""

    test_fraction: Real = 0.15
    val_fraction: Real = 0.15


class FusionParams(Section):
    """Calibration, blending and stacking."""

    blend: Literal["inverse_log_loss", "optimal"] = "inverse_log_loss"
    #: ``logistic``: multinomial logistic regression on the probability blocks (27 x 55
    #: parameters with images); ``pooled``: one weight per block and a bias per class;
    #: ``nested`` (rows with images): the text-only path's pooled meta-model, its biases
    #: fitted on every row with text, pooled with the image block by two weights;
    #: ``auto``: whichever has the lower cross-fitted log loss on the held-out rows.
    stack: Literal["auto", "logistic", "pooled", "nested"] = "auto"
    stack_C: Real = 1.0
    cv_folds: int = 5


class TrainingParams(Section):
    """How a run schedules its base models."""

    #: Base models trained at once, when the cluster holds their resources together (each is
    #: its own Ray task or Ray Train run); 1 trains them one after another.
    max_concurrent_models: int = Field(4, ge=1)


class ReviewParams(Section):
    """Review routing: which predictions are accepted without a person."""

    #: Precision that automatically accepted predictions must reach.
    target_precision: Real = Field(0.95, gt=0, lt=1)
    #: Held-out rows predicted as a class needed to fit that class its own threshold.
    min_class_rows: int = Field(30, ge=1)
    #: Folds of the cross-fitted estimate of precision and coverage.
    folds: int = Field(5, ge=2)


class StagePool(Section):
    """Resources of one scoring stage's Ray Data actor pool."""

    #: Actors in the pool; with ``max_pool_size``, the fewest it keeps.
    pool_size: int = Field(1, ge=1)
    #: Largest size the pool grows to while its input queues up (null: a fixed pool).
    max_pool_size: int | None = None
    num_cpus: Real = Field(1.0, ge=0)
    num_gpus: Real = Field(0.0, ge=0)
    #: Rows per batch handed to the stage.
    batch_size: int = Field(256, ge=1)
    #: Rows per model call inside the stage. Every call takes exactly this many (the last
    #: padded), so a row's scores never depend on its neighbours; a GPU wants hundreds.
    micro_batch_size: int = Field(16, ge=1)
    #: Text stage only: tokens per model call, in place of ``micro_batch_size``. Texts padded
    #: to L tokens then run in calls of exactly ``max(1, tokens_per_call // L)`` rows: a call's
    #: shape depends on its rows' own padded length alone, and short texts do not fill
    #: calls sized for long ones with padding rows (docs/performance.md). null: every
    #: call takes ``micro_batch_size`` rows.
    tokens_per_call: int | None = Field(None, ge=1)
    #: Deep models' forward passes: ``auto`` runs a pool without GPUs on the ONNX Runtime
    #: export sealed in the bundle (PyTorch where there is none), a GPU pool on PyTorch;
    #: ``torch``: PyTorch everywhere (docs/performance.md, "CPU runtime").
    runtime: Literal["auto", "torch"] = "auto"

    @model_validator(mode="after")
    def _sizes_in_order(self) -> StagePool:
        if self.max_pool_size is not None and self.max_pool_size < self.pool_size:
            raise RuleError("max_pool_size", f"must be at least pool_size ({self.pool_size})")
        return self

    @property
    def threads(self) -> int:
        """Threads of a stage's models (torch or ONNX Runtime) and image decoding: the CPUs
        each actor holds, rounded up."""
        return max(1, math.ceil(self.num_cpus))


class ScoringParams(Section):
    """The Ray Data scoring pipeline."""

    text: StagePool = Field(default_factory=StagePool)
    #: Decoding, resizing and cropping images for the image models, on CPUs only: a pool
    #: that scales apart from the model pool, which then only runs forward passes.
    image_prep: StagePool = Field(default_factory=lambda: StagePool(batch_size=64))
    image: StagePool = Field(default_factory=lambda: StagePool(micro_batch_size=8))
    fusion: StagePool = Field(
        default_factory=lambda: StagePool(num_cpus=0.5, batch_size=1024, micro_batch_size=256)
    )
    rows_per_output_file: int = Field(100_000, ge=1)
    #: The in-process engine runs its stages side by side, each on a thread of its own, when
    #: the text and image stages run the same number of torch threads; false runs them one
    #: after another. The output is the same either way.
    overlap_stages: bool = True
    #: Share of rows that may find no image before a run is refused as probably pointed at
    #: the wrong image folder (``--allow-missing-images`` scores them anyway).
    max_missing_image_share: Real = Field(0.5, ge=0, le=1)

    @model_validator(mode="before")
    @classmethod
    def _pool_defaults(cls, data: Any) -> Any:
        """A partial mapping of a pool, completed from that pool's own default: the image
        pool's ``micro_batch_size`` is 8, not ``StagePool``'s 16, when its mapping leaves
        the key out."""
        if not isinstance(data, dict):
            return data
        completed = dict(data)
        for name, value in data.items():
            field = cls.model_fields.get(name)
            if isinstance(value, dict) and field is not None and field.default_factory:
                completed[name] = {**field.default_factory().model_dump(), **value}
        return completed

    @model_validator(mode="after")
    def _token_budget_on_text_only(self) -> ScoringParams:
        for stage in ("image_prep", "image", "fusion"):
            if getattr(self, stage).tokens_per_call is not None:
                raise RuleError(f"{stage}.tokens_per_call", "only the text stage takes it")
        return self


class ServingParams(Section):
    """The online service (``rakuten-ray serve``)."""

    replicas: int = Field(1, ge=1)
    #: Resources of each replica. Its text and image stages run side by side, each on
    #: half the CPUs (rounded up) in threads.
    num_cpus: Real = 2.0
    num_gpus: Real = 0.0
    #: Products grouped into one pass through the stages, and how long the first of them
    #: waits for others.
    max_batch_size: int = Field(16, ge=1)
    batch_wait_timeout_s: Real = 0.01
    #: Rows per model call. ``null``: the batch engines' (``scoring.*.micro_batch_size``, and
    #: ``scoring.text.tokens_per_call``), so an answer equals batch scoring bit for bit; 1: one
    #: product is answered fastest, and probabilities agree with batch scoring to rounding
    #: (docs/serving.md).
    micro_batch_size: int | None = Field(1, ge=1)
    #: Request limits: products per request, and the body's size in bytes.
    max_products: int = Field(32, ge=1)
    max_body_bytes: int = Field(16 * 1024 * 1024, ge=1)


class ExportParams(Section):
    """Exports of the deep models written into the bundle when it is sealed, for scoring on
    CPUs (:mod:`rakuten_ray.models.runtime`)."""

    #: Export each deep model to ONNX and check it against PyTorch on held-out rows.
    onnx: bool = True
    #: Also make and check a static int8 copy of each export; scoring loads it in place of
    #: the fp32 export only where it passes the same checks and runs faster.
    int8: bool = True
    #: How many times as fast as the fp32 export an int8 copy's model calls must run, as
    #: timed on the checked rows when the bundle is sealed, for it to be kept.
    int8_min_speedup: Real = Field(1.1, ge=0)
    #: Held-out rows whose model inputs fix an int8 copy's activation scales.
    calibration_rows: int = Field(256, ge=1)
    #: Share of checked rows whose label an export must give as PyTorch does to be used.
    min_agreement: Real = Field(0.995, ge=0, le=1)
    #: Held-out rows checked, at most, per text model and per image model.
    check_text_rows: int = Field(2000, ge=1)
    check_image_rows: int = Field(256, ge=1)

    def check_rows(self, modality: str) -> int:
        """Held-out rows checked for a model of ``modality`` (``text`` or ``image``)."""
        return self.check_text_rows if modality == "text" else self.check_image_rows


def _model_of(group: str, modality: Modality) -> PlainValidator:
    """Reads an entry of ``group`` into its kind's settings; the kind must read ``modality``."""

    def read(entry: Any) -> ModelSpec:
        spec = read_model_spec(entry)
        actual = kind_of(spec).modality
        if actual != modality:
            message = f"{spec.kind} is a {actual.value} kind, not allowed in {group}"
            raise problem(["kind"], message, spec.kind)
        return spec

    return PlainValidator(read)


#: Entries are dumped as their kind's settings class, every field of it.
TextModel = Annotated[SerializeAsAny[ModelSpec], _model_of("text_models", Modality.TEXT)]
ImageModel = Annotated[SerializeAsAny[ModelSpec], _model_of("image_models", Modality.IMAGE)]


class RunConfig(Section):
    """A whole training and scoring configuration."""

    name: str
    seed: int = 42
    text_models: list[TextModel] = Field(default_factory=list)
    image_models: list[ImageModel] = Field(default_factory=list)
    splits: SplitParams = Field(default_factory=SplitParams)
    training: TrainingParams = Field(default_factory=TrainingParams)
    fusion: FusionParams = Field(default_factory=FusionParams)
    review: ReviewParams = Field(default_factory=ReviewParams)
    export: ExportParams = Field(default_factory=ExportParams)
    scoring: ScoringParams = Field(default_factory=ScoringParams)
    serving: ServingParams = Field(default_factory=ServingParams)

    @model_validator(mode="after")
    def _models_named_once(self) -> RunConfig:
        if not self.text_models:
            raise RuleError("text_models", "at least one text model is required")
        names = [spec.name for spec in self.models()]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise RuleError("models", f"duplicate model name {duplicates[0]!r}")
        return self

    def models(self) -> list[ModelSpec]:
        """Every base model, text first."""
        return [*self.text_models, *self.image_models]

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to ``config.yaml`` next to a run."""
        return self.model_dump()

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


def _warn_unpinned(config: RunConfig) -> None:
    groups = (("text_models", config.text_models), ("image_models", config.image_models))
    for group, specs in groups:
        for spec in specs:
            unpinned = spec.check_pinned(f"{group}[{spec.name}]")
            if unpinned:
                warnings.warn(unpinned, UnpinnedModelWarning, stacklevel=3)


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate plain data (as read from YAML) into a :class:`RunConfig`."""
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, RunConfig, data) from None


def _apply_override(data: dict[str, Any], assignment: str) -> None:
    """Set one dotted key, e.g. ``image_models.effnet_lite0.train.epochs=1``."""
    if "=" not in assignment:
        raise ConfigError(f"override {assignment!r}: expected KEY=VALUE")
    dotted, raw = assignment.split("=", 1)
    parts = dotted.strip().split(".")
    node: Any = data
    for depth, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            matches = [item for item in node if isinstance(item, dict) and item.get("name") == part]
            if not matches:
                raise ConfigError(f"{'.'.join(parts[: depth + 1])}: no model named {part!r}")
            node = matches[0]
        else:
            node = node.setdefault(part, {})
    if not isinstance(node, dict):
        raise ConfigError(f"{dotted}: cannot set a key inside a non-mapping")
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(
    path: str | Path, overrides: list[str] | tuple[str, ...] = (), warn_unpinned: bool = True
) -> RunConfig:
    """Read a YAML config, apply ``KEY=VALUE`` overrides, and validate the result.

    With ``warn_unpinned``, a model downloaded from a hub without a commit hash is an
    :class:`UnpinnedModelWarning` (a bundle's frozen config, read for scoring, downloads
    nothing).

    Raises:
        ConfigError: unknown key, wrong type, or a bad override; the message names the key.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read config ({exc})") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    for assignment in overrides:
        _apply_override(data, assignment)
    try:
        config = config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError("\n".join(f"{path}: {line}" for line in str(exc).splitlines())) from exc
    if warn_unpinned:
        _warn_unpinned(config)
    return config
