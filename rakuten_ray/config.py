"""Typed run configuration, read from YAML, validated on load, overridable key by key.

A config file is checked against the dataclasses below: an unknown key or a value of the
wrong type is refused with an error that names the key's full path
(``image_models[effnet_lite0].train.epochs``). Each model entry is read into the settings
class of its ``kind`` (:mod:`rakuten_ray.models.registry`). Single keys are overridden from
the command line as ``KEY=VALUE`` with dotted paths; list entries are addressed by model name.
A model downloaded from a hub without a pinned commit is a warning
(:class:`UnpinnedModelWarning`).
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rakuten_ray.models.registry import Modality, get_kind, kind_names, kind_of
from rakuten_ray.models.spec import ConfigError, ModelSpec, Scaling

__all__ = [
    "ConfigError", "ExportParams", "FusionParams", "ReviewParams", "RunConfig", "ScoringParams",
    "ServingParams", "SplitParams", "StagePool", "TrainingParams", "UnpinnedModelWarning",
    "config_from_dict", "load_config", "model_spec_from_dict",
]  # fmt: skip


class UnpinnedModelWarning(UserWarning):
    """A model is downloaded from a hub at whatever revision the hub serves that day."""


@dataclass
class SplitParams:
    """The leak-free protocol's proportions."""

    test_fraction: float = 0.15
    val_fraction: float = 0.15


@dataclass
class FusionParams:
    """Calibration, blending and stacking."""

    blend: Literal["inverse_log_loss", "optimal"] = "inverse_log_loss"
    #: ``logistic``: multinomial logistic regression on the probability blocks (27 x 55
    #: parameters with images); ``pooled``: one weight per block and a bias per class;
    #: ``auto``: whichever has the lower cross-fitted log loss on the held-out rows.
    stack: Literal["auto", "logistic", "pooled"] = "auto"
    stack_C: float = 1.0
    cv_folds: int = 5


@dataclass
class TrainingParams:
    """How a run schedules its base models."""

    #: Base models trained at once, when the cluster holds their resources together (each is
    #: its own Ray task or Ray Train run); 1 trains them one after another.
    max_concurrent_models: int = 4


@dataclass
class ReviewParams:
    """Review routing: which predictions are accepted without a person."""

    #: Precision that automatically accepted predictions must reach.
    target_precision: float = 0.95
    #: Held-out rows predicted as a class needed to fit that class its own threshold.
    min_class_rows: int = 30
    #: Folds of the cross-fitted estimate of precision and coverage.
    folds: int = 5


@dataclass
class StagePool:
    """Resources of one scoring stage's Ray Data actor pool."""

    #: Actors in the pool; with ``max_pool_size``, the fewest it keeps.
    pool_size: int = 1
    #: Largest size the pool grows to while its input queues up (null: a fixed pool).
    max_pool_size: int | None = None
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    #: Rows per batch handed to the stage.
    batch_size: int = 256
    #: Rows per model call inside the stage. Every call takes exactly this many (the last
    #: padded), so a row's scores never depend on its neighbours; a GPU wants hundreds.
    micro_batch_size: int = 16
    #: Text stage only: tokens per model call, in place of ``micro_batch_size``. Texts padded
    #: to L tokens then run in calls of exactly ``max(1, tokens_per_call // L)`` rows: a call's
    #: shape depends on its rows' own padded length alone, and short texts do not fill
    #: calls sized for long ones with padding rows (docs/performance.md). null: every
    #: call takes ``micro_batch_size`` rows.
    tokens_per_call: int | None = None
    #: Deep models' forward passes: ``auto`` runs a pool without GPUs on the ONNX Runtime
    #: export sealed in the bundle (PyTorch where there is none), a GPU pool on PyTorch;
    #: ``torch``: PyTorch everywhere (docs/performance.md, "CPU runtime").
    runtime: Literal["auto", "torch"] = "auto"

    @property
    def threads(self) -> int:
        """Threads of a stage's models (torch or ONNX Runtime) and image decoding: the CPUs
        each actor holds, rounded up."""
        return max(1, math.ceil(self.num_cpus))


@dataclass
class ScoringParams:
    """The Ray Data scoring pipeline."""

    text: StagePool = field(default_factory=StagePool)
    #: Decoding, resizing and cropping images for the image models, on CPUs only: a pool
    #: that scales apart from the model pool, which then only runs forward passes.
    image_prep: StagePool = field(default_factory=lambda: StagePool(batch_size=64))
    image: StagePool = field(default_factory=lambda: StagePool(micro_batch_size=8))
    fusion: StagePool = field(
        default_factory=lambda: StagePool(num_cpus=0.5, batch_size=1024, micro_batch_size=256)
    )
    rows_per_output_file: int = 100_000
    #: Share of rows that may find no image before a run is refused as probably pointed at
    #: the wrong image folder (``--allow-missing-images`` scores them anyway).
    max_missing_image_share: float = 0.5


@dataclass
class ServingParams:
    """The online service (``rakuten-ray serve``)."""

    replicas: int = 1
    #: Resources of each replica (its torch threads: the CPUs, rounded up).
    num_cpus: float = 2.0
    num_gpus: float = 0.0
    #: Products grouped into one pass through the stages, and how long the first of them
    #: waits for others.
    max_batch_size: int = 16
    batch_wait_timeout_s: float = 0.01
    #: Rows per model call. ``null``: the batch engines' (``scoring.*.micro_batch_size``, and
    #: ``scoring.text.tokens_per_call``), so an answer equals batch scoring bit for bit; 1: one
    #: product is answered fastest, and probabilities agree with batch scoring to rounding
    #: (docs/serving.md).
    micro_batch_size: int | None = 1
    #: Request limits: products per request, and the body's size in bytes.
    max_products: int = 32
    max_body_bytes: int = 16 * 1024 * 1024


@dataclass
class ExportParams:
    """Exports of the deep models written into the bundle when it is sealed, for scoring on
    CPUs (:mod:`rakuten_ray.models.runtime`)."""

    #: Export each deep model to ONNX and check it against PyTorch on held-out rows.
    onnx: bool = True
    #: Also measure an int8 copy of each text encoder (used only where it passes the checks;
    #: dynamic quantisation lets a call's rows interact, so it never does).
    int8_text: bool = False
    #: Share of checked rows whose label an export must give as PyTorch does to be used.
    min_agreement: float = 0.995
    #: Held-out rows checked, at most, per text model and per image model.
    check_text_rows: int = 2000
    check_image_rows: int = 256

    def check_rows(self, modality: str) -> int:
        """Held-out rows checked for a model of ``modality`` (``text`` or ``image``)."""
        return self.check_text_rows if modality == "text" else self.check_image_rows


@dataclass
class RunConfig:
    """A whole training and scoring configuration."""

    name: str
    seed: int = 42
    text_models: list[ModelSpec] = field(default_factory=list)
    image_models: list[ModelSpec] = field(default_factory=list)
    splits: SplitParams = field(default_factory=SplitParams)
    training: TrainingParams = field(default_factory=TrainingParams)
    fusion: FusionParams = field(default_factory=FusionParams)
    review: ReviewParams = field(default_factory=ReviewParams)
    export: ExportParams = field(default_factory=ExportParams)
    scoring: ScoringParams = field(default_factory=ScoringParams)
    serving: ServingParams = field(default_factory=ServingParams)

    def models(self) -> list[ModelSpec]:
        """Every base model, text first."""
        return [*self.text_models, *self.image_models]

    def to_dict(self) -> dict[str, Any]:
        """Plain data, as written to ``config.yaml`` next to a run."""
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved config as YAML."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


#: A decimal number written as text, scientific notation included (not "nan" or "inf").
_DECIMAL = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _convert(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against the type hint ``hint``; build dataclasses from mappings."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(value, inner, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {type(value).__name__}")
        return [_convert(item, args[0], _item_key(key, item, i)) for i, item in enumerate(value)]
    if hint is ModelSpec:
        return _build(_spec_type(value, key), value, key)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {type(value).__name__}")
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        # YAML 1.1 reads ``3e-4`` (no dot) as a string; it is meant as a number.
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {hint.__name__}, got a boolean")
    if not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {_type_name(hint)}, got {type(value).__name__}")
    return value


def _spec_type(value: Any, key: str) -> type:
    """The settings class of a model entry, chosen by its ``kind``."""
    kind = value.get("kind") if isinstance(value, dict) else None
    if kind is None:
        raise ConfigError(f"{key}.kind: required key is missing (known: {kind_names()})")
    try:
        return get_kind(kind).spec_type
    except (KeyError, TypeError):
        raise ConfigError(f"{key}.kind: {kind!r} is not one of {kind_names()}") from None


def _item_key(key: str, item: Any, position: int) -> str:
    name = item.get("name") if isinstance(item, dict) else None
    return f"{key}[{name if isinstance(name, str) else position}]"


def _upgrade(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Keys of earlier config versions read as today's, so that older bundles still open:
    ``scaling.bf16: true|false`` is ``scaling.precision: bf16|fp32``."""
    if cls is Scaling and "bf16" in data:
        rest = {k: v for k, v in data.items() if k != "bf16"}
        return {**rest, "precision": "bf16" if data["bf16"] is True else "fp32"}
    return data


def _build(cls: type, data: Any, key: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{key or 'config'}: expected a mapping, got {type(data).__name__}")
    data = _upgrade(cls, data)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    prefix = f"{key}." if key else ""
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix}{unknown[0]}: unknown key (known: {sorted(fields)})")
    required = [
        name for name, f in fields.items()
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]  # fmt: skip
    for name in required:
        if name not in data:
            raise ConfigError(f"{prefix}{name}: required key is missing")
    values = {
        name: _convert(_with_field_defaults(fields[name], value), hints[name], f"{prefix}{name}")
        for name, value in data.items()
    }
    return cls(**values)


def _with_field_defaults(spec: dataclasses.Field, value: Any) -> Any:
    """A partial mapping for a nested dataclass, completed from the field's own default.

    The field's default can differ from the class's (the image pool's ``micro_batch_size``
    is 8, not ``StagePool``'s 16); a mapping that leaves a key out must keep the field's.
    """
    if spec.default_factory is dataclasses.MISSING or not isinstance(value, dict):
        return value
    default = spec.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    return _merged(dataclasses.asdict(default), value)


def _merged(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in given.items():
        nested = isinstance(value, dict) and isinstance(base.get(key), dict)
        out[key] = _merged(base[key], value) if nested else value
    return out


def _check_models(config: RunConfig) -> None:
    names = [spec.name for spec in config.models()]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"models: duplicate model name {duplicates[0]!r}")
    for group, specs, modality in (
        ("text_models", config.text_models, Modality.TEXT),
        ("image_models", config.image_models, Modality.IMAGE),
    ):
        for spec in specs:
            key = f"{group}[{spec.name}]"
            actual = kind_of(spec).modality
            if actual != modality:
                raise ConfigError(
                    f"{key}.kind: {spec.kind} is a {actual.value} kind, not allowed in {group}"
                )
            spec.check(key)
    if not config.text_models:
        raise ConfigError("text_models: at least one text model is required")


def _warn_unpinned(config: RunConfig) -> None:
    groups = (("text_models", config.text_models), ("image_models", config.image_models))
    for group, specs in groups:
        for spec in specs:
            problem = spec.check_pinned(f"{group}[{spec.name}]")
            if problem:
                warnings.warn(problem, UnpinnedModelWarning, stacklevel=3)


def _check_scoring(scoring: ScoringParams) -> None:
    """Counts of the scoring pools must be positive; resources must not be negative."""
    for stage in ("text", "image_prep", "image", "fusion"):
        pool: StagePool = getattr(scoring, stage)
        for name in ("pool_size", "batch_size", "micro_batch_size"):
            if getattr(pool, name) < 1:
                raise ConfigError(f"scoring.{stage}.{name}: must be at least 1")
        for name in ("num_cpus", "num_gpus"):
            if getattr(pool, name) < 0:
                raise ConfigError(f"scoring.{stage}.{name}: must not be negative")
        if pool.max_pool_size is not None and pool.max_pool_size < pool.pool_size:
            raise ConfigError(
                f"scoring.{stage}.max_pool_size: must be at least pool_size ({pool.pool_size})"
            )
        if pool.tokens_per_call is not None:
            if stage != "text":
                raise ConfigError(f"scoring.{stage}.tokens_per_call: only the text stage takes it")
            if pool.tokens_per_call < 1:
                raise ConfigError(f"scoring.{stage}.tokens_per_call: must be at least 1, or null")
    if scoring.rows_per_output_file < 1:
        raise ConfigError("scoring.rows_per_output_file: must be at least 1")
    if not 0.0 <= scoring.max_missing_image_share <= 1.0:
        raise ConfigError("scoring.max_missing_image_share: must be between 0 and 1")


def _check_ranges(config: RunConfig) -> None:
    if config.training.max_concurrent_models < 1:
        raise ConfigError("training.max_concurrent_models: must be at least 1")
    if not 0.0 < config.review.target_precision < 1.0:
        raise ConfigError("review.target_precision: must be between 0 and 1")
    if config.review.folds < 2:
        raise ConfigError("review.folds: must be at least 2")
    if config.review.min_class_rows < 1:
        raise ConfigError("review.min_class_rows: must be at least 1")
    export = config.export
    if not 0.0 <= export.min_agreement <= 1.0:
        raise ConfigError("export.min_agreement: must be between 0 and 1")
    for name in ("check_text_rows", "check_image_rows"):
        if getattr(export, name) < 1:
            raise ConfigError(f"export.{name}: must be at least 1")
    serving = config.serving
    for name in ("replicas", "max_batch_size", "max_products", "max_body_bytes"):
        if getattr(serving, name) < 1:
            raise ConfigError(f"serving.{name}: must be at least 1")
    if serving.micro_batch_size is not None and serving.micro_batch_size < 1:
        raise ConfigError("serving.micro_batch_size: must be at least 1, or null")


def config_from_dict(data: dict[str, Any]) -> RunConfig:
    """Validate plain data (as read from YAML) into a :class:`RunConfig`."""
    config = _build(RunConfig, data, "")
    _check_models(config)
    _check_scoring(config.scoring)
    _check_ranges(config)
    return config


def model_spec_from_dict(data: dict[str, Any]) -> Any:
    """Validate one model entry (as carried to Ray Train workers) into its kind's settings."""
    key = f"models[{data.get('name', '?')}]"
    spec = _convert(data, ModelSpec, key)
    spec.check(key)
    return spec


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
        raise ConfigError(f"{path}: {exc}") from exc
    if warn_unpinned:
        _warn_unpinned(config)
    return config
